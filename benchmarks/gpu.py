"""GPU benchmark: per-client paths against batched clients, 32-true against bf16-mixed, on one GPU.

One prepared command with its own time limit, so that one short GPU session suffices:

    python benchmarks/gpu.py                      # on a CUDA GPU; stops by itself after --time-limit (540 s)
    python benchmarks/gpu.py --smoke              # on the CPU, tiny: the script end to end (a few minutes on 2 busy cores)

The workload (``--smoke`` shrinks it): the MNIST-sized CNN workload of
``benchmarks/executors.py`` (60,000 synthetic 1x28x28 images written as real MNIST files,
McMahan's CNN, 100 clients, Dirichlet 0.5, 1 local epoch of batch 50, FedAsync) with 64
clients in flight and 640 client updates, run once per case:

- ``sequential``, 32-true: the baseline;
- ``threads`` (2 workers on the one GPU, each on its own CUDA stream), 32-true;
- ``batched`` (``executor.max_batch=64``: up to 64 clients in one vmapped kernel), 32-true;
- ``sequential`` and ``threads`` with ``client.precision=bf16-mixed`` (the batched path
  trains in 32-bit only: with bf16-mixed it falls back to the per-client path).

Each case runs as its own ``python -m lightning_asyncfl`` process with whatever is left of
the time limit; a case that runs out is killed and reported as timed out, and the table
and ``benchmarks/results/gpu.json`` (``gpu_smoke.json``) are written with what finished.
Speed is client updates per second once the executor has started (``steady``), as a
ratio to ``sequential`` at the same precision measured in the same run; the tolerance
check compares each case's final test accuracy with that baseline's (within
``--accuracy-tolerance``, 0.01) and reports the largest weight difference. The goal:
batched >= 5x sequential on the GPU, within tolerance. Where no CUDA GPU exists and
``--smoke`` is not given, the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, ROOT, save, write_mnist_like  # noqa: E402

EXECUTORS = {
    "sequential": ["executor=sequential"],
    "threads": ["executor=threads", "executor.workers=2"],
    "batched": ["executor=batched"],
}
CASES = [("sequential", "32-true"), ("threads", "32-true"), ("batched", "32-true"), ("sequential", "bf16-mixed"), ("threads", "bf16-mixed")]
GOAL = 5.0


def workload(root: Path, *, clients: int, updates: int, concurrency: int, accelerator: str) -> list[str]:
    return [
        "data=mnist", f"data.root={root}", f"data.num_clients={clients}", "partition=dirichlet", "partition.beta=0.5",
        "partition.min_samples=1", "model=cnn", "model.lr=0.01", "client.batch_size=50", "client.epochs=1",
        "server.aggregator.alpha=0.6", "server.aggregator.a=0.5", f"server.scheduler.concurrency={concurrency}",
        f"server.max_steps={updates}", f"server.eval_every={updates}", f"client.accelerator={accelerator}",
        "progress=false", "checkpoint.enabled=false",
    ]  # fmt: skip


def run_case(overrides: list[str], out: Path, limit: float) -> dict:
    """One run in a fresh process, killed (with its workers) after ``limit`` seconds."""
    command = [sys.executable, "-m", "lightning_asyncfl", *overrides, f"output_dir={out}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=max(limit, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"status": "timed out"}
    if process.returncode != 0:
        return {"status": f"failed (exit {process.returncode})", "log_tail": output[-2000:]}
    summary = json.loads((out / "summary.json").read_text())
    steady = summary["wall_time"] - summary["executor_start_time"]
    return {
        "status": "ok", "client_updates": summary["client_updates"], "wall_s": summary["wall_time"],
        "startup_s": summary["executor_start_time"], "updates_per_s": summary["client_updates"] / steady,
        "final_accuracy": summary["final_accuracy"], "model": str(out / "final_model.pt"),
    }  # fmt: skip


def max_weight_difference(a: str, b: str) -> float:
    import torch

    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny workload on the CPU: checks the script, measures nothing worth reporting")
    parser.add_argument("--time-limit", type=float, default=540.0, help="seconds for the whole script; cases still to run when it is spent are skipped")
    parser.add_argument("--updates", type=int, default=None, help="client updates per case (640; smoke: 8)")
    parser.add_argument("--concurrency", type=int, default=None, help="clients in flight and batched executor's max_batch (64; smoke: 4)")
    parser.add_argument("--accuracy-tolerance", type=float, default=0.01)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.time_limit

    import torch

    if args.smoke:
        accelerator, device = "cpu", "cpu (smoke)"
        root = write_mnist_like(DATA_ROOT.with_name(DATA_ROOT.name + "_smoke"), n_train=400, n_test=100)
        clients, updates, concurrency = 10, args.updates or 8, args.concurrency or 4
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU here: the GPU benchmark is skipped (python benchmarks/gpu.py --smoke checks it on the CPU)")
            return 0
        accelerator, device = "cuda", torch.cuda.get_device_name(0)
        root = write_mnist_like(DATA_ROOT)
        clients, updates, concurrency = 100, args.updates or 640, args.concurrency or 64

    base = workload(root, clients=clients, updates=updates, concurrency=concurrency, accelerator=accelerator)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for executor, precision in CASES:
            left = deadline - time.monotonic()
            row = {"executor": executor, "precision": precision}
            if left < 5:
                rows.append({**row, "status": "skipped (time limit)"})
                continue
            print(f"{executor} / {precision} ({left:.0f} s left) ...", file=sys.stderr, flush=True)
            extra = [f"executor.max_batch={concurrency}"] if executor == "batched" else []
            overrides = [*base, *EXECUTORS[executor], *extra, f"client.precision={precision}"]
            rows.append({**row, **run_case(overrides, Path(tmp) / f"{executor}-{precision}", left)})
        for row in rows:
            baseline = next((r for r in rows if r["executor"] == "sequential" and r["precision"] == row["precision"] and r["status"] == "ok"), None)
            if row["status"] != "ok" or baseline is None:
                continue
            row["speedup"] = row["updates_per_s"] / baseline["updates_per_s"]
            row["accuracy_difference"] = abs(row["final_accuracy"] - baseline["final_accuracy"])
            row["max_weight_difference"] = max_weight_difference(row["model"], baseline["model"])
            row["within_tolerance"] = row["accuracy_difference"] <= args.accuracy_tolerance and math.isfinite(row["max_weight_difference"])
    for row in rows:
        row.pop("model", None)

    print(f"\ndevice: {device}; {updates} client updates, {concurrency} in flight, {clients} clients\n")
    print("| executor | precision | status | updates/s | vs sequential (same precision) | final accuracy | accuracy difference | max \\|w − w_seq\\| |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["status"] == "ok":
            print(f"| {r['executor']} | {r['precision']} | ok | {r['updates_per_s']:.2f} | {r.get('speedup', float('nan')):.2f}x | "
                  f"{r['final_accuracy']:.4f} | {r.get('accuracy_difference', float('nan')):.4f} | {r.get('max_weight_difference', float('nan')):.2e} |")
        else:
            print(f"| {r['executor']} | {r['precision']} | {r['status']} | | | | | |")
    batched = next((r for r in rows if r["executor"] == "batched" and r.get("speedup") is not None), None)
    if batched is not None:
        verdict = "met" if batched["speedup"] >= GOAL and batched["within_tolerance"] else "not met"
        print(f"\nbatched: {batched['speedup']:.2f}x sequential, within tolerance: {batched['within_tolerance']} (goal >= {GOAL}x: {verdict})")
    name = "gpu_smoke" if args.smoke else "gpu"
    print(f"written {save(name, {'device': device, 'updates': updates, 'concurrency': concurrency, 'clients': clients, 'rows': rows})}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
