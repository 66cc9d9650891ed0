"""self.log semantics, torchmetrics, the model check before a run, and optimizer state per client."""

from __future__ import annotations

import copy
import csv
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_asyncfl.client import ClientTrainer, Evaluator, check_model
from lightning_asyncfl.client_algorithms import FedProx
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.models.mlp import MLP
from lightning_asyncfl.run import run
from lightning_asyncfl.state import Job, ModelState
from tests.helpers import toy_data
from tests.conftest import SMALL


def _job(seed: int = 3, client: int = 0, job_id: int = 0) -> Job:
    return Job(job_id=job_id, client_id=client, base_version=0, seed=seed, dispatch_time=0.0, arrival_time=1.0)


class Logged(L.LightningModule):
    """Logs with every self.log option that has a per-job meaning, and torchmetrics objects."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 3)
        self.train_acc = MulticlassAccuracy(num_classes=3, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=3, average="micro")
        self.by_hand = MulticlassAccuracy(num_classes=3, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("max_loss", loss, on_step=False, on_epoch=True, reduce_fx="max")
        self.log("hidden", loss, logger=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        self.val_acc(logits, y)
        self.by_hand.update(logits, y)  # updated by hand, logged from its compute() at the epoch's end
        self.log("accuracy", self.val_acc)

    def on_validation_epoch_end(self):
        self.log("by_hand", self.by_hand.compute())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _lightning_logged(module, loader, epochs):
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader)
    return trainer


def test_self_log_options_and_a_metric_object_give_lightnings_epoch_values():
    train, _, indices = toy_data(num_clients=2, per_client=10)
    template = Logged()
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=4)

    metrics = trainer.train(_job(), ModelState.from_module(template)).metrics
    oracle = _lightning_logged(copy.deepcopy(template), trainer.job_dataloader(_job()), epochs=2)

    # on_epoch values are the last epoch's, exactly Lightning's (Metric.compute(), reduce_fx, weighted mean)
    for name in ("acc", "max_loss", "loss_epoch"):
        assert metrics[name] == float(oracle.logged_metrics[name]), name
    # a value logged per step is the mean over the job's steps (Lightning logs each step; a job reports one number)
    assert set(metrics) == {"acc", "max_loss", "loss_epoch", "loss_step"}  # logger=False stays out
    assert "hidden" in trainer.view.callback_metrics and trainer.view.progress_bar_metrics.keys() == {"loss_step", "loss_epoch"}


def test_metric_state_is_reset_per_job_so_nothing_leaks_across_clients():
    train, _, indices = toy_data(num_clients=2, per_client=10)
    template = Logged()
    base = ModelState.from_module(template)
    shared = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4)

    shared.train(_job(client=0), base)
    after_other_client = shared.train(_job(client=1), base).metrics["acc"]
    fresh = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4).train(_job(client=1), base).metrics["acc"]

    assert after_other_client == fresh
    assert all(int(m.update_count) == 0 for m in shared.module.modules() if isinstance(m, MulticlassAccuracy))


def test_evaluation_computes_metric_objects_and_hand_updated_metrics_without_leaking_across_evaluations():
    _, test, _ = toy_data()
    template = Logged()
    other = ModelState.from_module(Logged().apply(lambda m: nn.init.normal_(m.weight) if isinstance(m, nn.Linear) else None))
    state = ModelState.from_module(template)
    evaluator = Evaluator(copy.deepcopy(template), test, batch_size=7)

    evaluator.evaluate(other)
    again = evaluator.evaluate(state)

    with torch.no_grad():
        expected = (template.layer(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean().item()
    assert again["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert again["test_by_hand"] == pytest.approx(expected, abs=1e-6)  # not the mean over both evaluations
    assert again == Evaluator(copy.deepcopy(template), test, batch_size=7).evaluate(state)


class MetricMLP(MLP):
    """The built-in MLP with torchmetrics objects in training and evaluation (for runs through the config)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits, y)
        self.log("loss", loss)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc.update(self(x), y)
        self.log("accuracy", self.test_acc)


METRIC_MLP = "model._target_=tests.test_lightning_features.MetricMLP"


def test_a_resumed_run_with_module_metrics_equals_the_uninterrupted_run(make_cfg, tmp_path):
    longer = run(make_cfg(METRIC_MLP, "server.max_steps=18", name="longer"))
    run(make_cfg(METRIC_MLP, name="short"))
    from lightning_asyncfl.run import compose

    resumed = run(compose([*SMALL, METRIC_MLP, f"resume={tmp_path / 'short'}", "server.max_steps=18"]))

    assert resumed["final_accuracy"] == longer["final_accuracy"]
    for name in ("metrics.csv", "updates.csv", "client_training.csv"):
        a = [r for r in csv.DictReader((tmp_path / "short" / name).open()) if "wall_time" not in r or r.pop("wall_time") is not None]
        b = [r for r in csv.DictReader((tmp_path / "longer" / name).open()) if "wall_time" not in r or r.pop("wall_time") is not None]
        assert a == b, name


def test_client_metrics_are_flat_columns_of_updates_csv_and_per_version_means(make_cfg, tmp_path):
    summary = run(make_cfg(METRIC_MLP))
    out = tmp_path / "run"

    updates = list(csv.DictReader((out / "updates.csv").open()))
    per_version = list(csv.DictReader((out / "client_training.csv").open()))

    assert "metrics" not in updates[0] and {"client/loss", "client/train_acc"} <= set(updates[0])
    assert all(0.0 <= float(r["client/train_acc"]) <= 1.0 for r in updates if r["status"] == "accepted")
    assert len(per_version) == summary["steps"]
    # FedAsync: one update per version, so both means are that update's value
    accepted = [r for r in updates if r["status"] == "accepted"]
    assert [float(r["client/loss"]) for r in per_version] == [float(r["client/loss"]) for r in accepted][: len(per_version)]
    assert all(r["client/loss"] == r["client/loss_weighted"] for r in per_version)


def test_client_means_weight_by_samples():
    from lightning_asyncfl.callbacks import client_means
    from lightning_asyncfl.state import ClientUpdate
    from tests.helpers import flat_state

    s = flat_state([0.0])
    updates = [ClientUpdate(_job(), s, s, num_samples=30, metrics={"loss": 1.0}), ClientUpdate(_job(), s, s, num_samples=10, metrics={"loss": 3.0, "acc": 0.5})]

    means = client_means(updates)

    assert means == {"client/acc": 0.5, "client/acc_weighted": 0.5, "client/loss": 2.0, "client/loss_weighted": (30 + 30) / 40}


# -- refused before training ---------------------------------------------------------------


class Plain(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.layer(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("loss", F.cross_entropy(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class OwnLoader(Plain):
    def train_dataloader(self):
        return None


class UsesDatamodule(Plain):
    def on_train_epoch_start(self):
        self.trainer.datamodule.foo()


class ReturnsNone(Plain):
    def training_step(self, batch, batch_idx):
        F.cross_entropy(self.layer(batch[0]), batch[1])


class SilentValidation(Plain):
    def validation_step(self, batch, batch_idx):
        self.layer(batch[0])


class Manual(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(F.cross_entropy(self.layer(batch[0]), batch[1]))
        opt.step()


def _check(module, **kwargs):
    train, test, indices = toy_data()
    settings = {"epochs": 1, "batch_size": 4, **kwargs.pop("settings", {})}
    return check_model(module, train, indices, test, settings=settings, **kwargs)


@pytest.mark.parametrize(
    "module, kwargs, message",
    [
        (OwnLoader, {}, "OwnLoader overrides train_dataloader: a client's data comes from the data config"),
        (UsesDatamodule, {}, "UsesDatamodule failed in a trial client job before the run: UnsupportedFeature: UsesDatamodule uses self.trainer.datamodule"),
        (ReturnsNone, {}, "ReturnsNone.training_step returned None on every batch of a trial job"),
        (SilentValidation, {}, "SilentValidation.validation_step logs nothing"),
        (Manual, {"algorithm": FedProx(mu=0.1)}, "client_algorithm FedProx changes each automatic optimization step, but Manual uses manual optimization"),
        (Manual, {"settings": {"gradient_clip_val": 1.0}}, "client.gradient_clip_val is set but Manual uses manual optimization"),
    ],
)
def test_what_a_job_cannot_honour_is_refused_before_training_with_what_to_do(module, kwargs, message):
    module = module()  # built here: importing this file (as Hydra does for MetricMLP) draws no random numbers
    before = ModelState.from_module(module).flat.clone()

    with pytest.raises(ConfigError, match=None) as error:
        _check(module, **kwargs)

    assert message in str(error.value)
    assert torch.equal(ModelState.from_module(module).flat, before)  # the check trains a copy


def test_the_check_passes_a_supported_module_and_returns_what_a_job_logs():
    assert _check(Logged()) == ["acc", "loss_epoch", "loss_step", "max_loss"]
    assert _check(Manual()) == []


def test_a_run_with_an_unsupported_module_fails_before_training(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="ReturnsNoneMLP.training_step returned None"):
        run(make_cfg("model._target_=tests.test_lightning_features.ReturnsNoneMLP"))
    assert not (tmp_path / "run" / "updates.csv").exists()


class ReturnsNoneMLP(MLP):
    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)


# -- optimizer state per job or per client --------------------------------------------------


class Momentum(Plain):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def test_keep_optimizer_state_carries_momentum_and_schedule_to_the_clients_next_job():
    train, _, indices = toy_data(num_clients=2, per_client=8)
    torch.manual_seed(0)
    template = Momentum()
    base = ModelState.from_module(template)
    kept = ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=4, keep_optimizer_state=True)
    fresh = ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=4)

    first = kept.train(_job(), base)
    second = kept.train(_job(seed=4, job_id=1), base, first.client_state)
    unkept = fresh.train(_job(seed=4, job_id=1), base)

    assert set(first.client_state) == {"lightning_asyncfl.optimizer_state"} and fresh.train(_job(), base).client_state == {}
    assert kept.view.optimizers[0].param_groups[0]["lr"] == 0.1 * 0.5**4  # the schedule went on over both jobs
    assert fresh.view.optimizers[0].param_groups[0]["lr"] == 0.1 * 0.5**2
    assert not torch.equal(second.state.flat, unkept.state.flat)
    # the same state handed again gives the same bytes (the input is not modified)
    assert torch.equal(kept.train(_job(seed=4, job_id=1), base, first.client_state).state.flat, second.state.flat)


def test_keep_optimizer_state_resumes_bit_for_bit_and_is_the_same_on_threads(make_cfg, tmp_path):
    keep = ("client.keep_optimizer_state=true", "model.momentum=0.9")
    longer = run(make_cfg(*keep, "server.max_steps=18", name="longer"))
    run(make_cfg(*keep, name="short"))
    from lightning_asyncfl.run import compose

    run(compose([*SMALL, *keep, f"resume={tmp_path / 'short'}", "server.max_steps=18", "executor=threads", "executor.workers=2"]))
    plain = run(make_cfg("model.momentum=0.9", "server.max_steps=18", name="plain"))

    assert (tmp_path / "short" / "final_model.pt").read_bytes() == (tmp_path / "longer" / "final_model.pt").read_bytes()
    assert (tmp_path / "plain" / "final_model.pt").read_bytes() != (tmp_path / "longer" / "final_model.pt").read_bytes()
    assert longer["steps"] == plain["steps"] == 18


class ManualMLP(MLP):
    """The built-in MLP trained with manual optimization: the same SGD steps as the automatic one."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("loss", loss)
        self.manual_backward(loss)
        opt.step()


def test_a_run_with_manual_optimization_equals_the_automatic_run_and_counts_the_same_flops(make_cfg, tmp_path):
    automatic = run(make_cfg(name="automatic"))
    manual = run(make_cfg("model._target_=tests.test_lightning_features.ManualMLP", name="manual"))

    assert (tmp_path / "manual" / "final_model.pt").read_bytes() == (tmp_path / "automatic" / "final_model.pt").read_bytes()
    assert manual["flops_per_example"] == automatic["flops_per_example"] > 0
