from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_asyncfl.state import ClientUpdate, Job, ModelState
from tests.helpers import flat_state


def test_from_module_puts_parameters_first_then_float_buffers_and_keeps_integer_buffers_aside():
    # Prepare
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))

    # Execute
    state = ModelState.from_module(net)

    # Assert
    assert state.layout.names == ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var")
    assert state.layout.offsets == (0, 6, 8, 10, 12, 14)
    assert state.layout.size == 16 == state.flat.numel()
    assert state.layout.parameter_size == 12
    assert list(state.extras) == ["1.num_batches_tracked"]
    assert state.extras["1.num_batches_tracked"].dtype == torch.long
    assert torch.equal(state.as_dict()["0.weight"], net[0].weight.detach())
    assert torch.equal(state.parameters, state.flat[:12])


def test_dict_view_shares_memory_with_flat_vector():
    state = ModelState.from_module(nn.Linear(2, 2))
    state.as_dict()["weight"][0, 0] = 42.0
    assert state.flat[0].item() == 42.0


def test_state_dict_loads_back_into_the_module_exactly():
    # Prepare
    torch.manual_seed(1)
    source, target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    source[1].num_batches_tracked.fill_(7)

    # Execute
    target.load_state_dict(ModelState.from_module(source).state_dict())

    # Assert
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_with_flat_rejects_a_vector_of_the_wrong_size():
    state = flat_state([1.0, 2.0])
    try:
        state.with_flat(torch.zeros(3))
    except ValueError as error:
        assert "does not fit layout of size 2" in str(error)
    else:
        raise AssertionError("with_flat accepted a vector of the wrong size")


def test_delta_is_trained_minus_base():
    job = Job(job_id=0, client_id=0, base_version=0, seed=0, dispatch_time=0.0, arrival_time=1.0)
    update = ClientUpdate(job=job, state=flat_state([3.0, 1.0]), base=flat_state([1.0, 1.5]), num_samples=5)
    assert update.delta.tolist() == [2.0, -0.5]
    assert (update.client_id, update.base_version, update.arrival_time) == (0, 0, 1.0)


def _saved_and_loaded(obj, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(obj, path)
    return torch.load(path, weights_only=True)


def test_job_model_state_and_update_round_trip_through_weights_only_load(tmp_path):
    # Prepare
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    base = ModelState.from_module(net)
    trained = base.with_flat(base.flat + 0.5).with_side(control_delta=torch.arange(3.0))
    job = Job(job_id=4, client_id=2, base_version=1, seed=99, dispatch_time=1.5, arrival_time=2.25, attempt=1, upload_bytes=40, examples=7)
    update = ClientUpdate(job=job, state=trained, base=base, num_samples=7, metrics={"train_loss": 0.25}, staleness=3)

    # Execute
    loaded_job = Job.from_plain(_saved_and_loaded(job.to_plain(), tmp_path))
    loaded_state = ModelState.from_plain(_saved_and_loaded(base.to_plain(), tmp_path))
    loaded_update = ClientUpdate.from_plain(_saved_and_loaded(update.to_plain(), tmp_path), base=base)

    # Assert
    assert loaded_job == job
    assert loaded_state.layout == base.layout
    assert torch.equal(loaded_state.flat, base.flat)
    assert loaded_state.extras.keys() == {"1.num_batches_tracked"}
    assert loaded_update.job == job and loaded_update.base is base
    assert (loaded_update.num_samples, loaded_update.metrics, loaded_update.staleness) == (7, {"train_loss": 0.25}, 3)
    assert torch.equal(loaded_update.state.flat, trained.flat) and torch.equal(loaded_update.delta, update.delta)
    assert torch.equal(loaded_update.state.side["control_delta"], torch.arange(3.0))


def test_model_state_saved_without_layout_needs_one():
    # Prepare
    state = ModelState.from_module(torch.nn.Linear(2, 1))

    # Execute
    plain = state.to_plain(layout=False)

    # Assert
    assert "layout" not in plain
    with pytest.raises(ValueError, match="needs layout="):
        ModelState.from_plain(plain)
    assert ModelState.from_plain(plain, state.layout).layout == state.layout
