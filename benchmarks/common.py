"""Shared pieces of the benchmarks: MNIST-shaped data written as real MNIST files, results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA_ROOT = Path(tempfile.gettempdir()) / "lightning_asyncfl_bench_data"


def write_mnist_like(root: Path = DATA_ROOT, n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> Path:
    """MNIST idx files (``root/MNIST/raw``) of random 28x28 images labelled by the argmax
    of a fixed random linear map; read by torchvision's real MNIST class. Returns ``root``."""
    raw = root / "MNIST" / "raw"
    if (raw / "t10k-labels-idx1-ubyte").is_file():
        return root
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((28 * 28, 10))
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = ((x.reshape(n, -1).astype(np.float64) / 255 - 0.5) @ w).argmax(axis=1).astype(np.uint8)
        _idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return root


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    return {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}


def save(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/NAME.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    children, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_pss_kib(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of one process, KiB (0, 0 once it is gone)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def run_sampling_tree(command: list[str], *, every: float, refresh: float, **popen) -> tuple[str, dict[str, int]]:
    """Run ``command`` to its end, sampling the memory of its process tree every ``every``
    seconds (the tree itself re-read every ``refresh`` seconds); returns its output and the
    peaks over time, in KiB: ``rss`` and ``pss`` summed over the tree, ``main_pss`` of the
    first process, and the most ``processes`` seen at once. Raises if it fails."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    peak = {"rss": 0, "pss": 0, "main_pss": 0, "processes": 1}

    def sample() -> None:
        pids, found = [process.pid], 0.0
        while process.poll() is None:
            if time.monotonic() - found > refresh:
                pids, found = process_tree(process.pid), time.monotonic()
            sizes = [rss_pss_kib(p) for p in pids]
            peak["rss"] = max(peak["rss"], sum(s[0] for s in sizes))
            peak["pss"] = max(peak["pss"], sum(s[1] for s in sizes))
            peak["main_pss"] = max(peak["main_pss"], sizes[0][1] if sizes else 0)
            peak["processes"] = max(peak["processes"], sum(1 for s in sizes if s[0]))
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return output, peak
