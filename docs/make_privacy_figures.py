"""Run the sweeps shown in docs/privacy.md: the privacy-utility curve and compression's accuracy-bytes trade-off.

    python docs/make_privacy_figures.py [--out DIR] [--seeds N]

1. Privacy-utility: DP-FedBuff (``server=fedbuff privacy=central``, digits, 20 clients,
   200 versions of K = 5) at several noise multipliers z, clip C fixed, ε at δ = 1e-5 from
   the run's accountant; plus the run without DP and the run with clipping alone (z = 0).
2. Compression: the default experiment (FedAsync on digits, 1000 versions) uncompressed,
   fp16, QSGD 4 bits, top-k 10% and 1% with error feedback: final test accuracy against
   the bytes uploaded.

A run whose directory already holds a completed ``summary.json`` is read, not run again.
Writes ``docs/images/privacy_utility.png``, ``docs/images/compression.png`` and, into DIR
(default ``outputs/privacy``), the run directories and ``privacy.json`` / ``privacy.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lightning_asyncfl import compose, run  # noqa: E402

DOCS = Path(__file__).resolve().parent
CLIP = 0.5
NOISE = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0]
COMPRESSION = {
    "none": ("uncompressed (float32)", ["compression=none"]),
    "fp16": ("fp16", ["compression=fp16"]),
    "qsgd4": ("QSGD 4 bits", ["compression=qsgd", "compression.bits=4"]),
    "topk10": ("top-k 10% + error feedback", ["compression=topk", "compression.density=0.1"]),
    "topk1": ("top-k 1% + error feedback", ["compression=topk", "compression.density=0.01"]),
}


def _run(out: Path, name: str, overrides: list[str]) -> dict:
    """The run's summary: read from ``out/name/summary.json`` when that run completed before, else run it."""
    done = out / name / "summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        if summary.get("status") == "completed":
            return summary
    return run(compose([f"output_dir={out / name}", "progress=false", *overrides]))


def privacy_sweep(out: Path, seeds: int) -> list[dict]:
    rows = []
    settings = [("no DP", ["privacy=none"])] + [
        (f"z={z:g}", ["privacy=central", f"privacy.dp.clip_norm={CLIP}", f"privacy.dp.noise_multiplier={z}"]) for z in NOISE
    ]
    for label, overrides in settings:
        accs, eps = [], None
        for seed in range(seeds):
            s = _run(out, f"dp-{label.replace('=', '').replace(' ', '_')}-s{seed}", ["server=fedbuff", f"seed={seed}", *overrides])
            accs.append(s["final_accuracy"])
            eps = (s["privacy"].get("dp") or {}).get("epsilon")
        rows.append({"setting": label, "epsilon": eps, "accuracy": statistics.fmean(accs), "accuracies": accs})
    return rows


def compression_sweep(out: Path, seeds: int) -> list[dict]:
    rows = []
    for key, (label, overrides) in COMPRESSION.items():
        accs, up = [], []
        for seed in range(seeds):
            s = _run(out, f"comp-{key}-s{seed}", [f"seed={seed}", *overrides])
            accs.append(s["final_accuracy"])
            up.append(s["bytes_up"])
        rows.append({"setting": label, "bytes_up": statistics.fmean(up), "accuracy": statistics.fmean(accs), "accuracies": accs})
    return rows


def figures(privacy: list[dict], compression: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    dp = [r for r in privacy if r["epsilon"] is not None]
    ax.plot([r["epsilon"] for r in dp], [r["accuracy"] for r in dp], "o-", label=f"DP-FedBuff, C={CLIP}")
    for r in dp:
        ax.annotate(r["setting"], (r["epsilon"], r["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    base = next(r for r in privacy if r["setting"] == "no DP")
    ax.axhline(base["accuracy"], color="gray", ls="--", label="no DP")
    ax.set_xscale("log")
    ax.set_xlabel("ε at δ = 1e-5 (user level, RDP accountant)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("Privacy-utility on digits (20 clients)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "images" / "privacy_utility.png", dpi=120)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in compression:
        ax.scatter(r["bytes_up"] / 1e6, r["accuracy"])
        ax.annotate(r["setting"], (r["bytes_up"] / 1e6, r["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MB uploaded (whole run)")
    ax.set_ylabel("final test accuracy (mean of seeds)")
    ax.set_title("Compression on the default experiment")
    fig.tight_layout()
    fig.savefig(DOCS / "images" / "compression.png", dpi=120)


def table(privacy: list[dict], compression: list[dict]) -> str:
    lines = ["| setting | ε (δ = 1e-5) | final test accuracy |", "|---|---|---|"]
    for r in privacy:
        eps = "—" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
        lines.append(f"| {r['setting']} | {eps} | {r['accuracy']:.4f} |")
    lines += ["", "| compression | MB uploaded | final test accuracy (mean of seeds) | seeds |", "|---|---|---|---|"]
    for r in compression:
        lines.append(f"| {r['setting']} | {r['bytes_up'] / 1e6:.2f} | {r['accuracy']:.4f} | {', '.join(f'{a:.4f}' for a in r['accuracies'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/privacy"))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per compression setting (the privacy sweep uses 1)")
    args = parser.parse_args()
    privacy = privacy_sweep(args.out, 1)
    compression = compression_sweep(args.out, args.seeds)
    figures(privacy, compression)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "privacy.json").write_text(json.dumps({"privacy": privacy, "compression": compression}, indent=2))
    text = table(privacy, compression)
    (args.out / "privacy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
