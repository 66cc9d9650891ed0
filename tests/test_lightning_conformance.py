"""One client job trains as ``lightning.Trainer(max_epochs=E).fit`` would: the oracle is a real Trainer.

Each case trains the same module (same initial weights) twice: once with the client
trainer, once with ``lightning.Trainer`` fed the job's own batches in the job's own order
(:meth:`ClientTrainer.job_dataloader`). The final weights must be equal bit for bit: the
client trainer runs the same PyTorch operations in the same order (Lightning's own
``configure_optimizers`` parsing, clipping arithmetic and result collection), on the CPU
with the same thread count, so no tolerance is needed.
"""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.state import Job, ModelState
from tests.helpers import toy_data

HOOKS = [
    "on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_before_backward",
    "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad", "on_train_batch_end",
    "on_train_epoch_end", "on_train_end", "on_fit_end",
]  # fmt: skip


class Net(L.LightningModule):
    """A tiny classifier whose optimization is chosen by ``kind``; records every training hook."""

    def __init__(self, kind: str = "sgd", manual: bool = False, own_clipping: bool = False) -> None:
        super().__init__()
        self.kind, self.own_clipping = kind, own_clipping
        self.automatic_optimization = not manual
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)
        self.calls: list[tuple[str, int, int]] = []

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        if self.automatic_optimization:
            return loss
        body, head = self.optimizers()
        body.zero_grad()
        head.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(body, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
        body.step()
        if batch_idx % 2 == 1:
            head.step()
        return loss

    def on_train_epoch_end(self):
        self.calls.append(("on_train_epoch_end", self.current_epoch, self.global_step))
        if not self.automatic_optimization:
            self.lr_schedulers().step()

    def configure_optimizers(self):
        kind = self.kind
        if kind == "sgd":
            return torch.optim.SGD(self.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3)
        if kind == "adam_list_pair":
            opt = torch.optim.Adam(self.parameters(), lr=0.05)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.3)]
        if kind == "adamw_dict_step":
            opt = torch.optim.AdamW(self.parameters(), lr=0.05)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2}}
        if kind == "rmsprop_dict_epoch":
            opt = torch.optim.RMSprop(self.parameters(), lr=0.01)
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 1}}
        if kind == "plateau":
            opt = torch.optim.SGD(self.parameters(), lr=0.5)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)  # mode=max: it reduces every epoch
            return {"optimizer": opt, "lr_scheduler": sched, "monitor": "train_loss_epoch"}
        if kind == "onecycle":
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=self.trainer.estimated_stepping_batches)
            return [opt], [{"scheduler": sched, "interval": "step"}]
        if kind == "two":  # manual optimization: one optimizer per layer, a scheduler stepped by hand
            body = torch.optim.SGD(self.body.parameters(), lr=0.4)
            head = torch.optim.Adam(self.head.parameters(), lr=0.02)
            return [body, head], [torch.optim.lr_scheduler.StepLR(body, step_size=1, gamma=0.5)]
        raise ValueError(kind)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.calls.append(("configure_gradient_clipping", self.current_epoch, self.global_step))
        if self.own_clipping:  # the module's own rule: clip the head's gradients by value only
            torch.nn.utils.clip_grad_value_(self.head.parameters(), 0.01)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


def _recorder(name):
    def hook(self, *args, **kwargs):
        self.calls.append((name, self.current_epoch, self.global_step))

    return hook


for _name in HOOKS:
    if _name != "on_train_epoch_end":
        setattr(Net, _name, _recorder(_name))


def _job(seed: int = 5, client: int = 1) -> Job:
    return Job(job_id=0, client_id=client, base_version=0, seed=seed, dispatch_time=0.0, arrival_time=1.0)


def both(kind: str = "sgd", *, epochs: int = 2, manual: bool = False, own_clipping: bool = False, cls: type = None, **client: object):
    """(client trainer's module and result, Lightning's module) after one job of the same module."""
    train, _, indices = toy_data(num_clients=3, per_client=10)
    torch.manual_seed(0)
    template = (cls or Net)(kind, manual, own_clipping)
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=epochs, batch_size=4, **client)
    result = trainer.train(_job(), ModelState.from_module(template))
    oracle = copy.deepcopy(template)
    lightning = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1, deterministic=True,
        accumulate_grad_batches=int(client.get("accumulate_grad_batches", 1)),
        gradient_clip_val=client.get("gradient_clip_val"), gradient_clip_algorithm=client.get("gradient_clip_algorithm"),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lightning.fit(oracle, train_dataloaders=trainer.job_dataloader(_job()))
    return trainer.module, result, oracle, lightning


def assert_same_training(ours, result, oracle):
    assert torch.equal(result.state.flat, ModelState.from_module(oracle).flat)
    assert ours.calls == oracle.calls


@pytest.mark.parametrize("kind", ["sgd", "adam_list_pair", "adamw_dict_step", "rmsprop_dict_epoch", "onecycle"])
def test_every_configure_optimizers_form_trains_as_lightning(kind):
    ours, result, oracle, _ = both(kind)

    assert_same_training(ours, result, oracle)
    assert not torch.equal(result.state.flat, ModelState.from_module(Net(kind)).flat)


def test_reduce_on_plateau_follows_its_monitor_as_lightning():
    ours, result, oracle, lightning = both("plateau", epochs=3)

    assert_same_training(ours, result, oracle)
    assert lightning.optimizers[0].param_groups[0]["lr"] == 0.5 * 0.5**2  # the first epoch sets the best; each later one reduces
    assert result.metrics["train_loss_epoch"] == pytest.approx(float(lightning.logged_metrics["train_loss_epoch"]), abs=0)


def test_schedulers_really_step_per_interval_and_frequency():
    # ExponentialLR(0.5) stepped every 2nd batch of 3 per epoch, 2 epochs: once per epoch
    ours, _, oracle, lightning = both("adamw_dict_step")
    lr = lightning.optimizers[0].param_groups[0]["lr"]

    assert lr == 0.05 * 0.5**2
    assert ours.trainer.optimizers[0].param_groups[0]["lr"] == lr


def test_manual_optimization_with_two_optimizers_and_a_scheduler_as_lightning():
    ours, result, oracle, lightning = both("two", manual=True, epochs=3)

    assert_same_training(ours, result, oracle)
    # global_step counts every optimizer.step(): 3 batches x (1 + steps of the head at odd batch_idx) x 3 epochs
    assert oracle.global_step == lightning.global_step == 3 * (3 + 1)
    assert [c for c in ours.calls if c[0] == "on_train_end"] == [("on_train_end", 3, 12)]


@pytest.mark.parametrize("clip", [{"gradient_clip_val": 0.05, "gradient_clip_algorithm": "norm"}, {"gradient_clip_val": 0.02, "gradient_clip_algorithm": "value"}])
def test_gradient_clipping_keys_clip_as_lightning(clip):
    clipped, result, oracle, _ = both("sgd", **clip)
    _, plain, _, _ = both("sgd")

    assert_same_training(clipped, result, oracle)
    assert not torch.equal(result.state.flat, plain.state.flat)


def test_a_modules_own_configure_gradient_clipping_runs_as_in_lightning():
    ours, result, oracle, _ = both("sgd", own_clipping=True)
    _, plain, _, _ = both("sgd")

    assert_same_training(ours, result, oracle)
    assert not torch.equal(result.state.flat, plain.state.flat)


def test_gradient_accumulation_as_lightning_with_a_step_scheduler():
    # 3 batches per epoch, accumulate 2: steps after batches 1 and 2 (the last batch steps alone)
    ours, result, oracle, lightning = both("adamw_dict_step", accumulate_grad_batches=2)

    assert_same_training(ours, result, oracle)
    assert lightning.global_step == 4
    assert ours.trainer.global_step == 4


def test_hooks_run_in_lightnings_order_with_epoch_and_step_counting_within_the_job():
    ours, _, oracle, _ = both("sgd")

    assert ours.calls == oracle.calls
    names = [c[0] for c in ours.calls]
    first_batch = names[: names.index("on_train_batch_end") + 1]
    assert first_batch == [
        "on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_before_zero_grad",
        "on_before_backward", "on_after_backward", "on_before_optimizer_step", "configure_gradient_clipping", "on_train_batch_end",
    ]  # fmt: skip
    assert ours.calls[-3:] == [("on_train_epoch_end", 1, 6), ("on_train_end", 2, 6), ("on_fit_end", 2, 6)]  # an epoch counts once complete


def test_counters_restart_with_every_job():
    train, _, indices = toy_data(num_clients=3, per_client=10)
    template = Net()
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=4)
    base = ModelState.from_module(template)

    trainer.train(_job(), base)
    trainer.module.calls.clear()
    trainer.train(_job(seed=6), base)

    assert trainer.module.calls[0] == ("on_fit_start", 0, 0)
    assert trainer.module.calls[-1] == ("on_fit_end", 2, 6)


class EndsEpochsEarly(Net):
    """``on_train_batch_start`` returning -1 ends the epoch (Lightning's rule)."""

    def on_train_batch_start(self, batch, batch_idx):
        self.calls.append(("on_train_batch_start", self.current_epoch, self.global_step))
        return -1 if batch_idx == 1 else None


def test_on_train_batch_start_returning_minus_one_ends_the_epoch_as_in_lightning():
    ours, result, oracle, lightning = both("rmsprop_dict_epoch", cls=EndsEpochsEarly)

    assert_same_training(ours, result, oracle)
    assert lightning.global_step == 2  # one step per epoch
