"""What the system model costs: the default experiment timed by the work vs by a delay distribution.

    python benchmarks/system.py [--repeats 3] [overrides ...]

Runs the default experiment (FedAsync on digits, 1000 versions) alternately with the
system model (the default, ``system=population delay=none``) and with the former default
(``system=none delay=lognormal``: job times drawn from a distribution that does not see the
work), ``--repeats`` times each in this process, and reports the median wall time of each,
their ratio, the time spent counting FLOPs, and the final accuracies.
Results: ``benchmarks/results/system.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402

SETTINGS = {"system model": ["system=population", "delay=none"], "delay only (former default)": ["system=none", "delay=lognormal"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from lightning_asyncfl import compose, run
    from lightning_asyncfl.run import build
    from lightning_asyncfl.system import training_flops_per_example

    walls: dict[str, list[float]] = {name: [] for name in SETTINGS}
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for index, (name, extra) in enumerate(SETTINGS.items()):  # alternate, so load on a shared machine hits both alike
                cfg = compose(["progress=false", "checkpoint.enabled=false", *extra, *args.overrides, f"output_dir={tmp}/{repeat}-{index}"])
                started = time.perf_counter()
                summary = run(cfg)
                walls[name].append(time.perf_counter() - started)
                accuracy[name] = summary["final_accuracy"]
        parts = build(compose(["progress=false", *args.overrides]))
        started = time.perf_counter()
        training_flops_per_example(parts["model"], parts["data"].train_dataset, 16)
        count_seconds = time.perf_counter() - started
    median = {name: statistics.median(v) for name, v in walls.items()}
    ratio = median["system model"] / median["delay only (former default)"]
    payload = {"overrides": args.overrides, "repeats": args.repeats, "wall_seconds": walls, "median_wall_seconds": median,
               "ratio": ratio, "final_accuracy": accuracy, "flop_count_seconds": count_seconds}  # fmt: skip
    path = save("system", payload)
    print("| setting | median wall (s) | final accuracy |\n|---|---|---|")
    for name in SETTINGS:
        print(f"| {name} | {median[name]:.2f} | {accuracy[name]:.4f} |")
    print(f"\nwall-time ratio (system model / delay only): {ratio:.3f}; counting FLOPs: {count_seconds * 1000:.1f} ms")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
