"""FlatState: lazy creation, device and dtype moves, key and shape checks, checkpoint round trip."""

from __future__ import annotations

import io

import pytest
import torch

from lightning_asyncfl.aggregators.fedat import Held
from lightning_asyncfl.aggregators.server_state import FlatState


def _zeros(like):
    return {"m": torch.zeros_like(like), "v": torch.ones_like(like)}


def test_state_is_made_at_first_use_like_the_flat_vector():
    state = FlatState("Opt", ("m", "v"))
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)

    made = state.get(x, _zeros)

    assert not state and state.state_dict() == {}
    assert made["m"].dtype == torch.float64 and made["v"].tolist() == [1.0, 1.0]


def test_loaded_state_moves_to_the_flat_vectors_dtype_and_round_trips_through_torch_load():
    state = FlatState("Opt", ("m", "v"))
    state.set({"m": torch.tensor([1.0, 2.0]), "v": torch.tensor([3.0, 4.0])})
    blob = io.BytesIO()
    torch.save(state.state_dict(), blob)
    blob.seek(0)
    other = FlatState("Opt", ("m", "v"))

    other.load_state_dict(torch.load(blob, weights_only=True))
    got = other.get(torch.zeros(2, dtype=torch.float64), _zeros)

    assert got["m"].dtype == torch.float64 and got["v"].tolist() == [3.0, 4.0]


def test_load_takes_copies():
    source = {"m": torch.tensor([1.0]), "v": torch.tensor([2.0])}
    state = FlatState("Opt", ("m", "v"))

    state.load_state_dict(source)
    source["m"].add_(5.0)

    assert state.state_dict()["m"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("loaded", "match"),
    [
        ({"m": torch.zeros(2)}, r"Opt state needs keys \['m', 'v'\], got \['m'\]"),
        ({"m": torch.zeros(2), "v": torch.zeros(3)}, "Opt state must hold flat vectors of one length"),
        ({"m": torch.zeros(2, 2), "v": torch.zeros(2, 2)}, "Opt state must hold flat vectors of one length"),
    ],
)
def test_load_checks_keys_and_shapes(loaded, match):
    with pytest.raises(ValueError, match=match):
        FlatState("Opt", ("m", "v")).load_state_dict(loaded)


def test_a_loaded_state_that_does_not_fit_the_model_is_refused_at_first_use():
    state = FlatState("Opt", ("m", "v"))
    state.load_state_dict({"m": torch.zeros(3), "v": torch.zeros(3)})

    with pytest.raises(ValueError, match=r"Opt state \{'m': \(3,\), 'v': \(3,\)\} does not fit the model's flat vector of shape \(2,\)"):
        state.get(torch.zeros(2), _zeros)


def test_an_open_key_set_is_checked_by_its_rule():
    state = FlatState("Cache", key_rule=lambda key: key.startswith("c."), key_hint="'c.<id>'")

    state.load_state_dict({"c.1": torch.zeros(2), "c.7": torch.ones(2)})
    with pytest.raises(ValueError, match=r"Cache state keys are 'c.<id>', got 'x'"):
        state.load_state_dict({"x": torch.zeros(2)})

    assert sorted(state.state_dict()) == ["c.1", "c.7"]


def test_fedat_reads_a_held_update_of_either_checkpoint_format():
    flat = torch.tensor([1.0, 2.0])
    old = {"job": {"job_id": 4, "client_id": 1, "base_version": 0, "seed": 0, "dispatch_time": 0.0, "arrival_time": 1.0},
           "flat": flat, "num_samples": 3}  # fmt: skip

    assert Held.from_plain(old) == Held.from_plain({"job_id": 4, "flat": flat, "num_samples": 3})
    assert Held.from_plain(old).job_id == 4 and Held.from_plain(old).num_samples == 3
