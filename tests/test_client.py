"""ClientTrainer on real Lightning Fabric: hooks, self.log, seeds, fast and DataLoader paths."""

from __future__ import annotations

import copy

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from lightning_asyncfl.client import ClientTrainer, Evaluator
from lightning_asyncfl.client_algorithms import FedProx
from lightning_asyncfl.state import Job, ModelState
from tests.helpers import toy_data, toy_model


def _job(seed: int = 1, client: int = 0) -> Job:
    return Job(job_id=0, client_id=client, base_version=0, seed=seed, dispatch_time=0.0, arrival_time=1.0)


class StepLogger(L.LightningModule):
    """Logs the batch index and the batch size of every step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.log("batch_idx", float(batch_idx))
        self.log("batch_len", float(len(x)))
        return F.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_self_log_values_land_in_the_update_metrics_as_means_over_the_job():
    train, _, indices = toy_data(num_clients=1, per_client=10)
    trainer = ClientTrainer(StepLogger(), train, indices, epochs=2, batch_size=4)

    metrics = trainer.train(_job(), ModelState.from_module(StepLogger())).metrics

    # 10 samples in batches of 4: 3 steps per epoch, batch_idx 0, 1, 2 in each epoch (as Lightning numbers them); sizes 4, 4, 2 twice
    assert metrics == {"batch_idx": 1.0, "batch_len": 10 / 3}


def test_same_job_seed_same_weights_different_seed_different_batch_order():
    train, _, indices = toy_data()
    template = toy_model()
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4)
    base = ModelState.from_module(template)

    first = trainer.train(_job(seed=7), base).state
    again = trainer.train(_job(seed=7), base).state
    other = trainer.train(_job(seed=8), base).state

    assert torch.equal(first.flat, again.flat)
    assert not torch.equal(first.flat, other.flat)
    assert not torch.equal(first.flat, base.flat)


class PlainDataset(Dataset):
    """Not a TensorDataset: forces the DataLoader path."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)


def test_dataloader_path_gives_the_same_weights_as_the_tensor_fast_path():
    train, _, indices = toy_data()
    template = toy_model()
    base = ModelState.from_module(template)
    fast = ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=5)
    slow = ClientTrainer(copy.deepcopy(template), PlainDataset(train.tensors), indices, epochs=2, batch_size=5)

    a = fast.train(_job(client=2), base).state
    b = slow.train(_job(client=2), base).state

    assert torch.equal(a.flat, b.flat)


def test_proximal_term_matches_a_hand_written_fedprox_loop():
    # Prepare
    train, _, indices = toy_data()
    template = toy_model(lr=0.2)
    base = ModelState.from_module(template)
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4, algorithm=FedProx(mu=0.5))

    # Execute: the trainer, and the same steps by hand with loss + mu/2 ||w - w0||^2
    trained = trainer.train(_job(seed=11, client=1), base).state
    model = copy.deepcopy(template)
    anchors = [p.detach().clone() for p in model.parameters()]
    order = indices[1][torch.randperm(12, generator=torch.Generator().manual_seed(11))]
    x, y = train.tensors
    for start in range(0, 12, 4):
        idx = order[start : start + 4]
        loss = F.cross_entropy(model(x[idx]), y[idx]) + 0.25 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchors))
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-0.2)

    # Assert
    torch.testing.assert_close(trained.flat, ModelState.from_module(model).flat, rtol=0, atol=1e-6)
    plain = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4).train(_job(seed=11, client=1), base).state
    assert (trained.flat - base.flat).norm() < (plain.flat - base.flat).norm()


class BatchNormNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("accuracy", (self.net(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_batchnorm_running_stats_train_in_the_flat_vector_and_counters_stay_integer():
    train, test, indices = toy_data()
    torch.manual_seed(0)
    template = BatchNormNet()
    base = ModelState.from_module(template)
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4)

    trained = trainer.train(_job(), base).state

    running_mean = trained.as_dict()["net.1.running_mean"]
    assert not torch.equal(running_mean, base.as_dict()["net.1.running_mean"])
    assert trained.extras["net.1.num_batches_tracked"].dtype == torch.long
    assert int(trained.extras["net.1.num_batches_tracked"]) == 3
    assert "test_accuracy" in Evaluator(copy.deepcopy(template), test).evaluate(trained)


def test_evaluator_weights_batches_by_size_for_exact_accuracy():
    _, test, _ = toy_data()  # 30 test samples, evaluated in batches of 7 (last batch 2)
    template = toy_model()
    state = ModelState.from_module(template)

    metrics = Evaluator(copy.deepcopy(template), test, batch_size=7).evaluate(state)

    with torch.no_grad():
        expected = (template(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean().item()
        expected_loss = F.cross_entropy(template(test.tensors[0]), test.tensors[1]).item()
    assert abs(metrics["test_accuracy"] - expected) < 1e-6
    assert abs(metrics["test_loss"] - expected_loss) < 1e-5


def test_trainer_does_not_touch_the_global_random_state():
    train, _, indices = toy_data()
    template = toy_model(dropout=0.5)
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)

    trainer.train(_job(), ModelState.from_module(template))

    assert torch.equal(torch.rand(1), before)


def test_augmentation_runs_on_every_training_batch_with_the_job_generator():
    # Prepare: an augmentation that adds noise drawn from the job's generator
    train, _, indices = toy_data()
    template = toy_model()
    base = ModelState.from_module(template)
    seen = []

    def noisy(x, generator):
        seen.append(len(x))
        return x + torch.randn(x.shape, generator=generator)

    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=5, augment=noisy)
    plain = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=5)

    # Execute
    a = trainer.train(_job(seed=3), base).state
    b = trainer.train(_job(seed=3), base).state
    c = plain.train(_job(seed=3), base).state

    # Assert
    assert seen == [5, 5, 2, 5, 5, 2]
    assert torch.equal(a.flat, b.flat)
    assert not torch.equal(a.flat, c.flat)


def test_packed_indices_give_each_clients_list_as_a_view_and_pickle_as_two_tensors():
    import pickle

    from lightning_asyncfl.client import PackedIndices

    lists = [torch.tensor([4, 2]), torch.tensor([], dtype=torch.long), torch.tensor([7, 0, 1])]

    packed = PackedIndices.of(lists)
    again = pickle.loads(pickle.dumps(packed))

    assert len(packed) == 3 and PackedIndices.of(packed) is packed
    assert [packed[k].tolist() for k in range(3)] == [[4, 2], [], [7, 0, 1]]
    assert packed[2].data_ptr() == packed.flat.data_ptr() + 2 * 8  # a view, no copy
    assert [again[k].tolist() for k in range(3)] == [[4, 2], [], [7, 0, 1]]
    assert set(vars(again)) == {"flat", "offsets", "_bounds"}


def test_bf16_mixed_precision_trains_and_evaluates_on_the_cpu(make_cfg):
    from lightning_asyncfl.run import run

    full = run(make_cfg("server.max_steps=6", "server.eval_every=6", name="full"))
    mixed = run(make_cfg("server.max_steps=6", "server.eval_every=6", "client.precision=bf16-mixed", name="mixed"))
    eval_only = run(make_cfg("server.max_steps=6", "server.eval_every=6", "eval.precision=bf16-mixed", name="eval_only"))

    a = torch.load(f"{full['output_dir']}/final_model.pt", weights_only=True)
    b = torch.load(f"{mixed['output_dir']}/final_model.pt", weights_only=True)
    c = torch.load(f"{eval_only['output_dir']}/final_model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in b.values())  # weights stay float32
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 matmuls round differently
    assert all(torch.equal(a[k], c[k]) for k in a)  # evaluation precision does not touch training
    assert abs(eval_only["final_accuracy"] - full["final_accuracy"]) < 0.05
