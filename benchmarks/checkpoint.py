"""What checkpoints cost: wall time of a run with and without them, size and write time of one.

    python benchmarks/checkpoint.py            # the default experiment (FedAsync on digits, 1000 versions)
    python benchmarks/checkpoint.py --model resnet18 --data cifar10 ...   # any overrides, passed to the runs

Runs the same experiment three times in this process (checkpoints off, every 100 versions,
every 10 versions), checks that the final weights are identical, then writes the last
checkpoint again 20 times to time one atomic write (temporary file, fsync, rename).
Results: ``benchmarks/results/checkpoint.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    parser.add_argument("--repeats", type=int, default=20, help="timed writes of the last checkpoint")
    args = parser.parse_args(argv)

    import torch

    from lightning_asyncfl.checkpoint import find_checkpoint, load_checkpoint, write_atomic
    from lightning_asyncfl.run import compose, run

    settings = {"off": ["checkpoint.enabled=false"], "every 100": ["checkpoint.every_n_steps=100"], "every 10": ["checkpoint.every_n_steps=10"]}
    rows, weights = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in settings.items():
            out = Path(tmp) / name.replace(" ", "_")
            started = time.perf_counter()
            summary = run(compose(["progress=false", f"output_dir={out}", *args.overrides, *extra]))
            seconds = time.perf_counter() - started
            weights[name] = (out / "final_model.pt").read_bytes()
            written = len(list((out / "checkpoints").glob("*.ckpt"))) if (out / "checkpoints").is_dir() else 0
            rows.append({"checkpoints": name, "run_s": seconds, "loop_wall_s": summary["wall_time"], "kept": written, "steps": summary["steps"]})
            print(f"{name}: {seconds:.2f} s", file=sys.stderr)
        last = find_checkpoint(Path(tmp) / "every_10")
        state = load_checkpoint(last)
        size = last.stat().st_size
        target = Path(tmp) / "timing.ckpt"
        started = time.perf_counter()
        for _ in range(args.repeats):
            write_atomic(target, state)
        write_s = (time.perf_counter() - started) / args.repeats
        versions_held = len(state["states"])
    identical = len(set(weights.values())) == 1
    base = rows[0]["loop_wall_s"]
    for row in rows:
        row["ratio_vs_off"] = row["loop_wall_s"] / base
    payload = {
        "overrides": args.overrides, "rows": rows, "identical_final_weights": identical,
        "checkpoint_bytes": size, "write_s": write_s, "versions_held": versions_held, "torch": torch.__version__,
    }  # fmt: skip
    path = save("checkpoint", payload)
    print("| checkpoints | loop wall s | vs. off |\n|---|---|---|")
    for row in rows:
        print(f"| {row['checkpoints']} | {row['loop_wall_s']:.2f} | {row['ratio_vs_off']:.3f}x |")
    print(f"\none checkpoint: {size / 1024:.0f} KiB ({versions_held} model versions held), {write_s * 1000:.1f} ms per atomic write; "
          f"final weights identical: {identical}; {path}")  # fmt: skip


if __name__ == "__main__":
    main()
