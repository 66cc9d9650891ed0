"""GPU benchmark: the MNIST-sized CNN workload on one GPU, per-client path against batched clients.

Runs only where a CUDA GPU exists (it says so and exits 0 elsewhere). 64 clients in flight;
``executor=sequential`` trains them one after the other on the GPU, ``executor=batched``
up to 64 at once with torch.func. Writes ``benchmarks/results/gpu.json``.

    python benchmarks/gpu.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU benchmark is skipped")
        raise SystemExit(0)
    script = Path(__file__).resolve().parent / "executors.py"
    command = [sys.executable, str(script), "--workloads", "mnist_cnn", "--executors", "sequential", "batched",
               "--accelerator", "cuda", "--concurrency", "64", "--mnist-updates", "640", "--name", "gpu", *sys.argv[1:]]
    raise SystemExit(subprocess.call(command))
