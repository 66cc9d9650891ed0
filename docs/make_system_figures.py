"""Run the system-model reproduction and sanity checks shown in docs/system.md.

    python docs/make_system_figures.py [--out DIR]

1. ``experiment=system_time`` for FedAvg (sync, and with 1.3x over-selection), FedBuff (semi-async) and FedAsync (async)
   on the same data and heavy-tailed devices with one virtual-time budget; writes
   ``docs/images/system_time.png`` (test accuracy against virtual time and against client
   updates) and a table (final accuracy, versions, updates, time to 0.8 and 0.9, bytes).
2. The sanity table: client.epochs 1 vs 2 (compute seconds per job), model mlp vs cnn
   (communication seconds against the parameter ratio, compute against the FLOP ratio).

Everything lands in DIR (default ``outputs/system``): run directories, ``system.json`` and
``system.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lightning_asyncfl import compose, run  # noqa: E402

DOCS = Path(__file__).resolve().parent
SERVERS = {
    "fedavg": ("FedAvg (sync, 10 per round)", ["server=fedavg"]),
    "fedavg_over13": ("FedAvg, select 13, keep the first 10", ["server=fedavg", "server.scheduler.over_selection=1.3"]),
    "fedbuff": ("FedBuff (K=5, 10 in flight)", ["server=fedbuff"]),
    "fedasync": ("FedAsync (10 in flight)", ["server=fedasync"]),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _mean(run_dir: Path, column: str) -> float:
    return statistics.fmean(float(r[column]) for r in _rows(run_dir / "updates.csv") if r[column] != "")


def reproduction(out: Path) -> list[dict]:
    results = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for server, (label, overrides) in SERVERS.items():
        summary = run(compose(["experiment=system_time", *overrides, f"output_dir={out / server}"]))
        history = _rows(out / server / "metrics.csv")
        t = [float(r["virtual_time"]) for r in history]
        u = [int(r["client_updates"]) for r in history]
        acc = [float(r["test_accuracy"]) for r in history]
        axes[0].plot(t, acc, label=label)
        axes[1].plot(u, acc, label=label)
        reach = summary["time_to_accuracy"]
        results.append({
            "server": server, "final_accuracy": summary["final_accuracy"], "versions": summary["steps"],
            "client_updates": summary["client_updates"], "virtual_time": summary["virtual_time"],
            "time_to_0.8": None if reach["0.8"] is None else reach["0.8"]["virtual_time"],
            "time_to_0.9": None if reach["0.9"] is None else reach["0.9"]["virtual_time"],
            "mean_compute_time": summary["mean_compute_time"], "mean_communication_time": summary["mean_communication_time"],
            "bytes_up": summary["bytes_up"], "rejected": summary["rejected_total"],
        })  # fmt: skip
    axes[0].set_xlabel("virtual time (s)")
    axes[1].set_xlabel("client updates")
    for ax in axes:
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("digits, 50 clients, Dirichlet(0.3), log-normal devices (sigma 1.5), 4 virtual seconds")
    fig.tight_layout()
    fig.savefig(DOCS / "images" / "system_time.png", dpi=110)
    return results


def sanity(out: Path) -> list[dict]:
    base = ["server.max_steps=20", "progress=false", "system.jitter=0"]
    cases = {"mlp_e1": [], "mlp_e2": ["client.epochs=2"], "cnn_e1": ["model=cnn"]}
    summaries = {name: run(compose(base + extra + [f"output_dir={out / name}"])) for name, extra in cases.items()}
    per_client = {}
    for name in cases:
        per_client[name] = {r["client_id"]: r for r in _rows(out / name / "updates.csv")}
    shared = sorted(set(per_client["mlp_e1"]) & set(per_client["mlp_e2"]) & set(per_client["cnn_e1"]))

    def ratio(a: str, b: str, column: str) -> float:
        return statistics.fmean(float(per_client[b][c][column]) / float(per_client[a][c][column]) for c in shared)

    mlp, cnn = summaries["mlp_e1"], summaries["cnn_e1"]
    return [
        {"check": "client.epochs 2 vs 1: compute seconds per job", "expected": 2.0, "measured": ratio("mlp_e1", "mlp_e2", "compute_time")},
        {"check": "client.epochs 2 vs 1: communication seconds per job", "expected": 1.0, "measured": ratio("mlp_e1", "mlp_e2", "upload_time")},
        {"check": "model cnn vs mlp: upload seconds per job", "expected": cnn["model_bytes"] / mlp["model_bytes"], "measured": ratio("mlp_e1", "cnn_e1", "upload_time")},
        {"check": "model cnn vs mlp: compute seconds per job", "expected": cnn["flops_per_example"] / mlp["flops_per_example"], "measured": ratio("mlp_e1", "cnn_e1", "compute_time")},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/system"))
    args = parser.parse_args()
    results = {"reproduction": reproduction(args.out), "sanity": sanity(args.out)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "system.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| server | final acc. | versions | client updates | time to 0.8 | time to 0.9 | mean compute s | mean comm. s | bytes up | rejected |", "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, d=3: "not reached" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in results["reproduction"]:
        lines.append(f"| {r['server']} | {r['final_accuracy']:.4f} | {r['versions']} | {r['client_updates']} | {fmt(r['time_to_0.8'])} | "
                     f"{fmt(r['time_to_0.9'])} | {r['mean_compute_time']:.5f} | {r['mean_communication_time']:.4f} | {r['bytes_up']:,} | {r['rejected']} |")  # fmt: skip
    lines += ["", "| check | expected | measured |", "|---|---|---|"]
    lines += [f"| {r['check']} | {r['expected']:.4f} | {r['measured']:.4f} |" for r in results["sanity"]]
    (args.out / "system.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
