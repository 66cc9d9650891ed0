"""ClientTrainer and Evaluator: run a LightningModule's hooks through Lightning Fabric.

No ``lightning.Trainer`` is built per client (its per-fit set-up would dominate small
client jobs). One module instance per worker is set up with Fabric once; its parameters
and floating buffers are then re-bound as views of one flat tensor, so installing a global
model is a single ``copy_`` and reading the trained model a single ``clone``. Each job gets
a fresh optimizer from ``configure_optimizers()`` and its own random stream (batch order,
dropout) from the job's seed. ``self.log`` inside the module reaches Fabric's loggers; a
collector among them turns the logged values of a job into the update's metrics (mean
over the job's steps).

The parts, each importable from here:

- :mod:`~lightning_asyncfl.client.trainer`: :class:`ClientTrainer`, one job as ``fit`` runs it;
- :mod:`~lightning_asyncfl.client.evaluator`: :class:`Evaluator`, Lightning's validation epoch;
- :mod:`~lightning_asyncfl.client.spec`: :class:`TrainerSpec`, the picklable recipe executors send;
- :mod:`~lightning_asyncfl.client.check`: :func:`check_model`, a trial job and evaluation before a run;
- :mod:`~lightning_asyncfl.client.settings`: :func:`check_client_settings` and the allowed values;
- :mod:`~lightning_asyncfl.client.worker`: the Fabric set-up and flat binding both workers share,
  device seeding and :func:`intra_op_threads`;
- :mod:`~lightning_asyncfl.client.batches`: batches of a client's indices (device tensors or a DataLoader);
- :mod:`lightning_asyncfl.data.packed`: :class:`PackedIndices`, every client's index list in two tensors.
"""

from __future__ import annotations

from lightning_asyncfl._lazy import lazy_attributes
from lightning_asyncfl.client.check import check_model
from lightning_asyncfl.client.evaluator import Evaluator
from lightning_asyncfl.client.settings import ACCELERATORS, PRECISIONS, check_client_settings
from lightning_asyncfl.client.spec import TrainerSpec
from lightning_asyncfl.client.trainer import OPTIMIZER_STATE_KEY, ClientTrainer
from lightning_asyncfl.client.worker import intra_op_threads
from lightning_asyncfl.data.packed import PackedIndices

__all__ = [
    "ACCELERATORS", "OPTIMIZER_STATE_KEY", "PRECISIONS", "ClientTrainer", "Evaluator", "PackedIndices", "TrainerSpec",
    "check_client_settings", "check_model", "intra_op_threads",
]  # fmt: skip

#: the private helpers, where they live now (importable from here as when this was one module)
_NAMES = {
    "_fabric_device": "lightning_asyncfl.client.worker", "_owner": "lightning_asyncfl.client.worker",
    "_FabricWorker": "lightning_asyncfl.client.worker", "_reset_torchmetrics": "lightning_asyncfl.client.worker",
    "_has_torchmetrics": "lightning_asyncfl.client.worker", "_seed_device": "lightning_asyncfl.client.worker",
    "_batches": "lightning_asyncfl.client.batches", "_DeviceTensors": "lightning_asyncfl.client.batches",
    "_on_device": "lightning_asyncfl.client.batches", "_EpochOrders": "lightning_asyncfl.client.batches",
    "_pack_state": "lightning_asyncfl.client.trainer", "_unpack_state": "lightning_asyncfl.client.trainer",
}  # fmt: skip

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())
