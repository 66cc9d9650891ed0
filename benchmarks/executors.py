"""Executors benchmark: speed-up of 2 workers over sequential, and peak memory of each executor.

Runs each (workload, executor) as its own ``python -m lightning_asyncfl`` process, samples
the proportional set size (PSS) of that process and every process under it (workers, Ray's
daemons) twice a second, and reads the run's ``summary.json``. Prints a Markdown table
and writes ``benchmarks/results/executors.json``.

    python benchmarks/executors.py                    # both workloads, every executor
    python benchmarks/executors.py --workloads digits --executors sequential threads

Workloads:
  digits     the default experiment (FedAsync, MLP, 20 non-IID clients on scikit-learn's digits)
  mnist_cnn  MNIST-sized: 60,000 synthetic 1x28x28 images whose labels a fixed random linear map
             defines, written as real MNIST idx files; McMahan's CNN, 100 clients, Dirichlet 0.5,
             1 local epoch, batch 50, FedAsync with 10 clients in flight

Speed-up counts client updates per second of wall time, whole run (``total``) and after the
executor's workers have started (``steady``: start-up excluded, as in a long run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, RESULTS, run_sampling_tree, write_mnist_like  # noqa: E402

EXECUTORS = {  # one intra-op thread per job but where named: 2 jobs x 1 thread on 2 cores (the default, auto, gives every job all the cores)
    "sequential": ["executor=sequential", "executor.num_threads=1"],
    "sequential_2threads": ["executor=sequential", "executor.num_threads=2"],
    "threads": ["executor=threads", "executor.workers=2", "executor.num_threads=1"],
    "processes": ["executor=processes", "executor.workers=2", "executor.num_threads=1"],
    "processes_forkserver": ["executor=processes", "executor.workers=2", "executor.num_threads=1", "executor.start_method=forkserver"],
    "ray": ["executor=ray", "executor.workers=2", "executor.init_num_cpus=2", "executor.num_threads=1"],
    "batched": ["executor=batched", "executor.max_batch=64", "executor.num_threads=1"],
}
DEFAULT_EXECUTORS = ["sequential", "sequential_2threads", "threads", "processes", "processes_forkserver", "ray"]


def workloads(data_root: Path, updates: int) -> dict[str, list[str]]:
    return {
        "digits": [],  # the default experiment as `make run` runs it
        "mnist_cnn": [
            "data=mnist", f"data.root={data_root}", "data.num_clients=100", "partition=dirichlet", "partition.beta=0.5",
            "model=cnn", "model.lr=0.01", "client.batch_size=50", "client.epochs=1",
            "server.aggregator.alpha=0.6", "server.aggregator.a=0.5",
            f"server.max_steps={updates}", f"server.eval_every={updates}",
        ],
    }


def measure(overrides: list[str], out: Path) -> dict:
    """Run one experiment in a fresh process; its summary plus the peak PSS of its process tree."""
    command = [sys.executable, "-m", "lightning_asyncfl", *overrides, "progress=false", f"output_dir={out}"]
    # cheap enough not to slow the run on 2 cores: the tree every 2 s, its memory every 0.5 s
    _, peak = run_sampling_tree(command, every=0.5, refresh=2.0, start_new_session=True)
    summary = json.loads((out / "summary.json").read_text())
    steady = summary["wall_time"] - summary["executor_start_time"]
    return {
        "client_updates": summary["client_updates"],
        "wall_s": summary["wall_time"],
        "startup_s": summary["executor_start_time"],
        "updates_per_s_total": summary["client_updates"] / summary["wall_time"],
        "updates_per_s_steady": summary["client_updates"] / steady,
        "peak_pss_mib": peak["pss"] / 1024,
        "peak_main_pss_mib": peak["main_pss"] / 1024,
        "final_accuracy": summary["final_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["digits", "mnist_cnn"])
    parser.add_argument("--executors", nargs="+", default=DEFAULT_EXECUTORS, choices=list(EXECUTORS))
    parser.add_argument("--accelerator", default="cpu", help="client.accelerator of every run (cuda on a GPU)")
    parser.add_argument("--concurrency", type=int, default=10, help="clients in flight (server.scheduler.concurrency)")
    parser.add_argument("--name", default="executors", help="results file benchmarks/results/NAME.json")
    parser.add_argument("--mnist-updates", type=int, default=60, help="client updates of the mnist_cnn workload")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    args = parser.parse_args()

    if "mnist_cnn" in args.workloads:
        write_mnist_like(args.data_root)
    loads = workloads(args.data_root, args.mnist_updates)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            for name in args.executors:
                print(f"running {workload} / {name} ...", file=sys.stderr, flush=True)
                extra = [f"client.accelerator={args.accelerator}", f"server.scheduler.concurrency={args.concurrency}"]
                result = measure([*loads[workload], *extra, *EXECUTORS[name]], Path(tmp) / f"{workload}-{name}")
                rows.append({"workload": workload, "executor": name, **result})
    for row in rows:
        same = [r for r in rows if r["workload"] == row["workload"]]
        base = next((r for r in same if r["executor"] == "sequential"), same[0])  # the speed-ups' denominator: sequential, else the first row
        row["speedup_total"] = row["updates_per_s_total"] / base["updates_per_s_total"]
        row["speedup_steady"] = row["updates_per_s_steady"] / base["updates_per_s_steady"]

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| workload | executor | updates | wall s | start-up s | updates/s | speed-up (total) | speed-up (steady) | peak PSS MiB (all processes) | accuracy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workload']} | {r['executor']} | {r['client_updates']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | "
            f"{r['updates_per_s_steady']:.1f} | {r['speedup_total']:.2f}x | {r['speedup_steady']:.2f}x | {r['peak_pss_mib']:.0f} | {r['final_accuracy']:.4f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps({"machine": {"cores": os.cpu_count(), "python": platform.python_version()}, "rows": rows}, indent=2) + "\n")
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
