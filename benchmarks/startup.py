"""Startup benchmark: import and build of the default experiment against ``import torch``.

Each case is a fresh interpreter (``python -c CODE``), timed from its start to its exit by
this script; the cases alternate, ``--repeats`` times each, and the table gives each
case's median and its ratio to ``import torch`` measured in the same run:

- ``import torch``: the floor of any PyTorch program;
- ``import lightning_asyncfl``: the package alone (its public names are imported on first use);
- ``import torch, lightning.pytorch``: what the Lightning half of a run needs
  (``LightningModule``; Lightning's own import pulls in torchmetrics, and through it
  torchvision, ``torch._dynamo``, scipy.signal and matplotlib);
- build: ``import lightning_asyncfl`` + ``compose()`` + ``build()`` of the default
  experiment (config, data, partition, model, aggregator, scheduler, system model,
  executor, every check) with nothing trained.

Each case is also given as a ratio to ``import torch, lightning.pytorch``: every run
trains a ``LightningModule`` with Fabric, so that import is the floor of any run, and the
ratio says what the package's own import and build add to it.

    python benchmarks/startup.py               # 5 repeats
    python benchmarks/startup.py --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, save  # noqa: E402

BUILD = (
    "import lightning_asyncfl\n"
    "from lightning_asyncfl.run import build, compose\n"
    "pieces = build(compose(['progress=false']))\n"
    "assert pieces['model'] is not None and pieces['data'] is not None\n"
)
CASES = {
    "import torch": "import torch",
    "import lightning_asyncfl": "import lightning_asyncfl",
    "import torch, lightning.pytorch": "import torch, lightning.pytorch",
    "import lightning_asyncfl + compose + build (default experiment)": BUILD,
}
BASELINE = "import torch"
FLOOR = "import torch, lightning.pytorch"  # what any run with a LightningModule and Fabric imports
GOAL = 1.3


def time_once(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    for code in CASES.values():  # warm the file cache once; not timed
        time_once(code)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, code in CASES.items():
            times[name].append(time_once(code))
    base = statistics.median(times[BASELINE])
    floor = statistics.median(times[FLOOR])
    rows = [
        {"case": name, "median_s": statistics.median(t), "seconds": t, "ratio": statistics.median(t) / base, "ratio_to_lightning": statistics.median(t) / floor}
        for name, t in times.items()
    ]
    print(f"\nmedian of {args.repeats} fresh interpreters each, cases alternating\n")
    print("| case | median seconds | ratio to `import torch` | ratio to `import torch, lightning.pytorch` |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['median_s']:.2f} | {r['ratio']:.2f}x | {r['ratio_to_lightning']:.2f}x |")
    build = rows[-1]
    print(f"\nimport and build: {build['ratio']:.2f}x import torch (goal <= {GOAL}x); "
          f"{build['ratio_to_lightning']:.2f}x import torch + lightning.pytorch, the floor of a run with a LightningModule")
    print(f"written {save('startup', {'repeats': args.repeats, 'rows': rows})}")


if __name__ == "__main__":
    main()
