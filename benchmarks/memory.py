"""Memory benchmark: peak memory of the W1-like overhead workload, framework against a hand-written loop.

The workload of ``benchmarks/overhead.py`` (60,000 synthetic 1x28x28 images written as
real MNIST files, 100 clients, Dirichlet 0.5, McMahan's CNN, FedAsync with 10 clients in
flight, the 10,000 test images evaluated at the start and the end), ``--updates`` client
updates (40: memory reaches its plateau within the first updates). Each case is a fresh
process:

- ``hand-written``: the hand-written loop of ``overhead.py`` on the same data, read from
  the idx files with numpy (the MNIST module's float32 normalised tensors) and split by
  the same Dirichlet partition; neither Lightning nor the framework's loop is imported;
- ``executor=sequential`` and ``executor=processes executor.workers=2`` (workers forked
  by the zygote, the default from the command line; by the fork server; and spawned):
  ``python -m lightning_asyncfl`` with the overhead benchmark's overrides;
- two floors, for scale: a process that only imports torch, and one that imports torch
  and ``lightning.pytorch`` (whose import brings torchmetrics, torchvision, scipy.signal
  and matplotlib): what every worker process pays before it holds any data.

This script samples, every 0.2 s, every process of the case's tree (the run and its
worker processes) and keeps the peak of two sums: resident set size (RSS: a page shared
by several processes counts once in each) and proportional set size (PSS: a shared page
counts once in all, split between its holders; what the machine actually spends).
Reported as ratios to the hand-written loop, measured in one run.

    python benchmarks/memory.py
    python benchmarks/memory.py --updates 20 --cases hand sequential
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, run_sampling_tree, save, write_mnist_like  # noqa: E402

HAND = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from pathlib import Path
import overhead
from lightning_asyncfl import seeding
from lightning_asyncfl.data.partition import Dirichlet  # numpy only: no torch, no Lightning

root, updates = Path(sys.argv[2]) / "MNIST" / "raw", int(sys.argv[3])
def images(name):
    raw = np.fromfile(root / name, dtype=np.uint8)
    return raw[16:].reshape(-1, 1, 28, 28)
def labels(name):
    return np.fromfile(root / name, dtype=np.uint8)[8:].astype(np.int64)
def tensor(x):
    return torch.from_numpy(x).float().div_(255).sub_(0.1307).div_(0.3081)  # in place, as the MNIST module
x, test_x = tensor(images("train-images-idx3-ubyte")), tensor(images("t10k-images-idx3-ubyte"))
y, test_y = torch.from_numpy(labels("train-labels-idx1-ubyte")), torch.from_numpy(labels("t10k-labels-idx1-ubyte"))
parts = Dirichlet(beta=0.5)(y.numpy(), 100, seeding.stream(overhead.SEED, seeding.PARTITION))
clients = [torch.from_numpy(p) for p in parts]
torch.manual_seed(0)
initial = overhead.plain_cnn().state_dict()
torch.set_num_threads(1)
overhead.handwritten(x, y, clients, initial, test_x, test_y, updates=updates, eval_threads=2)
"""

IMPORTS = {"torch": "import torch", "lightning": "import torch, lightning.pytorch"}
#: the framework's cases: their overrides on top of the overhead benchmark's
RUNS = {
    "sequential": ["executor=sequential"],
    "processes": ["executor=processes", "executor.workers=2"],
    "processes_forkserver": ["executor=processes", "executor.workers=2", "executor.start_method=forkserver"],
    "processes_spawn": ["executor=processes", "executor.workers=2", "executor.start_method=spawn"],
}
CASES = {"torch": "import torch (nothing else)", "lightning": "import torch, lightning.pytorch (nothing else)", "hand": "hand-written PyTorch",
         **{case: "lightning_asyncfl, " + " ".join(extra) for case, extra in RUNS.items()}}


def peak_of_tree(command: list[str], every: float = 0.2) -> dict:
    """Run ``command``; the peak, over time, of RSS and of PSS summed over its process tree (MiB)."""
    _, peak = run_sampling_tree(command, every=every, refresh=1.0, cwd=ROOT)
    return {"peak_rss_mib": peak["rss"] / 1024, "peak_pss_mib": peak["pss"] / 1024, "processes": peak["processes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()

    import overhead

    root = write_mnist_like()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            print(f"{CASES[case]} ...", file=sys.stderr, flush=True)
            if case in IMPORTS:  # the floors: what importing alone costs one process
                command = [sys.executable, "-c", f"{IMPORTS[case]}; import time; time.sleep(1)"]
            elif case == "hand":
                command = [sys.executable, "-c", HAND, str(HERE), str(root), str(args.updates)]
            else:
                command = [sys.executable, "-m", "lightning_asyncfl", *overhead.overrides(root, args.updates), *RUNS[case], "checkpoint.enabled=false", f"output_dir={tmp}/{case}"]
            rows.append({"case": case, "loop": CASES[case], **peak_of_tree(command)})
    hand = next((r for r in rows if r["case"] == "hand"), rows[0])  # the ratios' denominator
    print(f"\n{args.updates} client updates; peaks over the process tree, sampled every 0.2 s\n")
    print(f"| loop | processes | peak RSS MiB (sum) | ratio to {hand['loop']} | peak PSS MiB (sum) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        r["rss_ratio"], r["pss_ratio"] = r["peak_rss_mib"] / hand["peak_rss_mib"], r["peak_pss_mib"] / hand["peak_pss_mib"]
        print(f"| {r['loop']} | {r['processes']} | {r['peak_rss_mib']:.0f} | {r['rss_ratio']:.2f}x | {r['peak_pss_mib']:.0f} | {r['pss_ratio']:.2f}x |")
    print(f"\nwritten {save('memory', {'updates': args.updates, 'rows': rows})}")


if __name__ == "__main__":
    main()
