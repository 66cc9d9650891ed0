"""Clients benchmark: the same data over 1,000 to 1,000,000 clients, IID and Dirichlet.

1,200,000 synthetic training samples shaped 1x8x8 (the default MLP's input; labels from a fixed
random linear map, 10 classes; a tenth held out for validation by the default
eval.val_fraction, 1,080,000 left), split over N clients by ``partition=iid`` or
``partition=dirichlet`` (beta 0.5, ``min_samples=0``: with a million clients and a million
samples some clients hold none), FedAsync with 100 clients in flight, 1 local epoch of
batch 50, ``--updates`` client updates; each setting runs in a fresh process. Reports per
setting: the partition's time (``Partition.packed``), the data module's whole set-up,
time per client update, the framework's own time per update (the loop's time less local
training and evaluation, measured by timing ``ClientTrainer.train`` and
``Evaluator.evaluate``), the partition report's time (CSV of every client, a picture of
at most 1,000 of them) and the peak resident memory of the process. With the same total
data, a client of a larger federation holds fewer samples, so its local training is
shorter: the framework's own time and the memory are the figures that must not grow with N.

    python benchmarks/clients.py                                   # 1e3 .. 1e6 clients, iid and dirichlet
    python benchmarks/clients.py --clients 1000 100000 --partitions iid --updates 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import save  # noqa: E402

PARTITIONS = {
    "iid": ["partition=iid"],
    "dirichlet": ["partition=dirichlet", "partition.beta=0.5", "partition.min_samples=0"],
}


def _data_module():  # the class is made on first use: importing this script must not import torch
    from lightning_asyncfl.data.datamodule import FederatedDataModule, tensor_dataset

    class LinearData(FederatedDataModule):
        """``samples`` random 1x8x8 inputs labelled by the argmax of a fixed random linear map; a tenth as many test samples."""

        def __init__(self, *, num_clients: int, samples: int = 1_200_000, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10, partition=None, seed: int = 0, **_: object) -> None:
            super().__init__(num_clients=num_clients, input_shape=input_shape, num_classes=num_classes, partition=partition, seed=seed)
            self.samples = int(samples)

        def load(self):
            rng = np.random.default_rng(1234)
            w = rng.standard_normal((64, self.num_classes)).astype(np.float32)
            n_test = max(self.samples // 10, 1)
            x = rng.standard_normal((self.samples + n_test, 64), dtype=np.float32)
            y = (x @ w).argmax(axis=1)
            x = x.reshape(-1, 1, 8, 8)
            return tensor_dataset(x[: self.samples], y[: self.samples]), tensor_dataset(x[self.samples :], y[self.samples :]), None

    return LinearData


def __getattr__(name: str):
    if name == "LinearData":
        return _data_module()
    raise AttributeError(name)


CHILD = r"""
import json, resource, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import lightning_asyncfl.client as client
from lightning_asyncfl.data.datamodule import FederatedDataModule
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.run import compose, run

spent = {"train": 0.0, "evaluate": 0.0, "partition": 0.0, "setup": 0.0, "report": 0.0}
def timed(name, method):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started
    return wrapper
client.ClientTrainer.train = timed("train", client.ClientTrainer.train)
client.Evaluator.evaluate = timed("evaluate", client.Evaluator.evaluate)
Partition.packed = timed("partition", Partition.packed)
FederatedDataModule.setup = timed("setup", FederatedDataModule.setup)
from lightning_asyncfl.loop import AsyncFLLoop
loop_run = AsyncFLLoop.run
def counted_from_the_loop(self, *args, **kwargs):  # the model check before the run trains too: not the loop's time
    spent["train"] = spent["evaluate"] = 0.0
    return loop_run(self, *args, **kwargs)
AsyncFLLoop.run = counted_from_the_loop
runner = sys.modules["lightning_asyncfl.run"]
runner.write_partition_report = timed("report", runner.write_partition_report)
summary = run(compose(sys.argv[2:]))
own = summary["wall_time"] - summary["executor_start_time"] - spent["train"] - spent["evaluate"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

print("RESULT " + json.dumps({
    "client_updates": summary["client_updates"], "wall_s": summary["wall_time"],
    "train_s": spent["train"], "evaluate_s": spent["evaluate"], "own_s": own,
    "partition_s": spent["partition"], "setup_s": spent["setup"], "report_s": spent["report"], "peak_rss_mib": peak,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", nargs="+", type=int, default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--partitions", nargs="+", choices=sorted(PARTITIONS), default=["iid", "dirichlet"])
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1_200_000, help="training samples (the default eval.val_fraction=0.1 holds a tenth out: 1,080,000 left for the clients)")
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()

    rows = []
    for name in args.partitions:
        for n in args.clients:
            print(f"{name}, {n} clients ...", file=sys.stderr, flush=True)
            out = Path("/tmp") / f"lightning_asyncfl_bench_clients_{name}_{n}"
            overrides = [
                "data._target_=clients.LinearData", f"+data.samples={args.samples}", f"data.num_clients={n}", *PARTITIONS[name],
                "model=mlp", "client.batch_size=50", "server=fedasync", f"server.scheduler.concurrency={args.concurrency}",
                f"server.max_steps={args.updates}", f"server.eval_every={args.updates}", "progress=false", "checkpoint.enabled=false",
                f"output_dir={out}",
            ]
            done = subprocess.run([sys.executable, "-c", CHILD, str(HERE), *overrides], capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"{name}, {n} clients failed:\n{done.stderr[-3000:]}")
            result = json.loads(line.removeprefix("RESULT "))
            u = result["client_updates"]
            rows.append({"partition": name, "clients": n, **result, "ms_per_update": 1000 * result["wall_s"] / u, "own_ms_per_update": 1000 * result["own_s"] / u})
    print(f"\n{args.samples:,} training samples, {args.concurrency} clients in flight, {args.updates} client updates per setting\n")
    print("| partition | clients | partition s | data set-up s | partition report s | ms per update | framework's own ms per update | ratio to the first | peak RSS MiB | ratio to the first |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.partitions:
        mine = [r for r in rows if r["partition"] == name]
        first = mine[0]
        for r in mine:
            r["own_ratio"] = r["own_ms_per_update"] / first["own_ms_per_update"]
            r["rss_ratio"] = r["peak_rss_mib"] / first["peak_rss_mib"]
            print(f"| {name} | {r['clients']:,} | {r['partition_s']:.2f} | {r['setup_s']:.2f} | {r['report_s']:.2f} | {r['ms_per_update']:.2f} | {r['own_ms_per_update']:.2f} | "
                  f"{r['own_ratio']:.2f}x | {r['peak_rss_mib']:.0f} | {r['rss_ratio']:.2f}x |")
    print(f"\nwritten {save('clients', {'samples': args.samples, 'updates': args.updates, 'concurrency': args.concurrency, 'rows': rows})}")


if __name__ == "__main__":
    main()
