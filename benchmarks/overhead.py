"""Overhead benchmark: lightning_asyncfl against a hand-written PyTorch loop doing the same SGD steps.

Workload: 60,000 synthetic 1x28x28 images whose labels a fixed random linear map defines
(written as real MNIST files, loaded by the framework's MNIST data module), 100 clients,
Dirichlet(0.5), McMahan's CNN, 1 local epoch of batch 50, SGD lr 0.01, FedAsync alpha 0.6
with polynomial staleness a = 0.5, 10 clients in flight, log-normal client speeds
(``system=none delay=lognormal``: the job times the hand-written loop draws),
200 client updates; the model is evaluated on the 10,000 test images at the start and at
the end.

The hand-written loop below is self-contained: plain ``torch.nn`` layers, its own event
heap, its own draws from the same seeded streams (which clients, how long each job takes,
each job's batch order), and the FedAsync mixing written out. It starts from the same
initial weights and the same tensors (data and client index lists), so it does the same
SGD steps in the same order, and its final weights must equal the framework's.

    python benchmarks/overhead.py                 # every setting below, 200 updates
    python benchmarks/overhead.py --updates 40    # a quick look

The thread settings are stated on both sides: the hand-written loop trains with 1
intra-op thread and with every core (``--cores``, default: the cores available); the
framework runs ``executor=sequential`` with ``executor.num_threads=1`` and with its
default ``auto`` (every core), and ``executor=threads`` with 2 workers x 1 thread. Each
framework row is compared with the hand-written loop that uses the same cores, and with
the 1-thread one. Reports client updates per second of each (the framework's loop time:
training, aggregation, checks, evaluation, logging), the ratios, all measured in one run,
and the largest difference between the final weights and those of the hand-written loop
with the same intra-op threads. Writes ``benchmarks/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, write_mnist_like  # noqa: E402

SEED = 0


def overrides(data_root: Path, updates: int) -> list[str]:
    return [
        "data=mnist", f"data.root={data_root}", "data.num_clients=100", "partition=dirichlet", "partition.beta=0.5",
        "model=cnn", "model.lr=0.01", "client.batch_size=50", "client.epochs=1",
        "server=fedasync", "server.aggregator.alpha=0.6", "server.aggregator.staleness=polynomial", "server.aggregator.a=0.5",
        "server.scheduler.concurrency=10", "system=none", "delay=lognormal", f"server.max_steps={updates}", f"server.eval_every={updates}",
        "eval.val_fraction=0",  # the hand-written loop evaluates the test set only; so does this run
        f"seed={SEED}", "progress=false",
    ]


# -- the hand-written loop -------------------------------------------------------------
def plain_cnn() -> nn.Sequential:
    """McMahan's CNN in plain torch.nn (the same layers as the framework's CNN)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 10),
    )  # fmt: skip


def stream(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([SEED, *key]))


def job_seed(job_id: int) -> int:
    hi, lo = np.random.SeedSequence([SEED, 2, job_id]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threads: int) -> float:
    """Test accuracy in batches of 1024 with torch's default threads (as the framework's evaluator)."""
    model.eval()
    correct = 0
    training_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        for s in range(0, len(x), 1024):
            correct += int((model(x[s : s + 1024]).argmax(1) == y[s : s + 1024]).sum())
    torch.set_num_threads(training_threads)
    return correct / len(x)


def handwritten(x, y, clients, initial, test_x, test_y, *, updates, concurrency=10, lr=0.01, batch=50, alpha=0.6, a=0.5, eval_threads=2):
    """FedAsync with a sequential client trainer, written out; returns (final flat weights, accuracy)."""
    model = plain_cnn()
    model.load_state_dict(initial)
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    system, delays = stream(1), stream(4)
    factors = np.exp(delays.normal(0.0, 1.0, size=len(clients)))  # per-client speed
    idle, jobs, heap = set(range(len(clients))), {}, []
    version, now, next_job = 0, 0.0, 0
    evaluate(model, test_x, test_y, eval_threads)
    while version < updates:
        k = min(concurrency - len(jobs), len(idle))
        if k > 0:  # top up to `concurrency` jobs in flight with random idle clients
            for c in sorted(int(c) for c in system.choice(sorted(idle), size=k, replace=False)):
                arrival = now + float(factors[c] * math.exp(delays.normal(0.0, 0.25)))
                heapq.heappush(heap, (arrival, next_job))
                jobs[next_job] = (c, version, flat)
                idle.discard(c)
                next_job += 1
        now, job = heapq.heappop(heap)
        client, base_version, base = jobs.pop(job)
        idle.add(client)
        # local training: one epoch of SGD from the base weights, the job's own batch order
        with torch.no_grad():
            at = 0
            for p in params:
                p.copy_(base[at : at + p.numel()].view_as(p))
                at += p.numel()
        seed = job_seed(job)
        generator = torch.Generator().manual_seed(seed)
        idx = clients[client]
        order = idx[torch.randperm(len(idx), generator=generator)]
        optimizer = torch.optim.SGD(params, lr=lr)
        model.train()
        for s in range(0, len(order), batch):
            b = order[s : s + batch]
            loss = F.cross_entropy(model(x[b]), y[b])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        trained = torch.cat([p.detach().reshape(-1) for p in params])
        # FedAsync: x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new, alpha_t = alpha (staleness + 1)^-a
        alpha_t = alpha * (version - base_version + 1.0) ** (-a)
        flat = (flat * (1.0 - alpha_t)).add_(trained, alpha=alpha_t)
        version += 1
    with torch.no_grad():
        at = 0
        for p in params:
            p.copy_(flat[at : at + p.numel()].view_as(p))
            at += p.numel()
    return flat, evaluate(model, test_x, test_y, eval_threads)


# -- the benchmark ---------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--cores", type=int, default=None, help="intra-op threads of the all-cores settings (default: the cores available)")
    args = parser.parse_args()
    from lightning_asyncfl.executors.base import available_cores

    cores = args.cores or available_cores()

    from lightning_asyncfl import compose
    from lightning_asyncfl.run import build, run

    root = write_mnist_like()
    base = overrides(root, args.updates)
    parts = build(compose(base))  # the same data, partition and initial model the runs use
    data = parts["data"]
    x, y = data.train_dataset.tensors
    test_x, test_y = data.test_dataset.tensors
    initial = {k.removeprefix("net."): v.clone() for k, v in parts["model"].state_dict().items()}
    clients = data.client_indices

    rows = []
    hands: dict[int, tuple[torch.Tensor, float]] = {}  # intra-op threads -> (final weights, updates/s)
    default_threads = torch.get_num_threads()
    for threads in sorted({1, cores}):
        print(f"hand-written loop, {threads} intra-op thread(s), {args.updates} client updates ...", file=sys.stderr, flush=True)
        torch.set_num_threads(threads)
        started = time.perf_counter()
        hand_flat, hand_accuracy = handwritten(x, y, clients, initial, test_x, test_y, updates=args.updates, eval_threads=default_threads)
        hand_s = time.perf_counter() - started
        torch.set_num_threads(default_threads)
        hands[threads] = (hand_flat, args.updates / hand_s)
        rows.append({"loop": "hand-written PyTorch", "workers": 1, "threads": threads, "cores_used": threads, "seconds": hand_s,
                     "updates_per_s": args.updates / hand_s, "accuracy": hand_accuracy})  # fmt: skip

    settings = [("sequential", 1, 1), ("sequential", 1, cores), ("threads", 2, 1)]
    with __import__("tempfile").TemporaryDirectory() as tmp:
        for executor, workers, threads in settings:
            extra = [f"executor={executor}", f"executor.num_threads={threads}"] + ([f"executor.workers={workers}"] if executor != "sequential" else [])
            name = f"{executor}-{workers}x{threads}"
            print(f"lightning_asyncfl, {' '.join(extra)} ...", file=sys.stderr, flush=True)
            summary = run(compose([*base, *extra, f"output_dir={tmp}/{name}"]))
            weights = torch.load(f"{tmp}/{name}/final_model.pt", weights_only=True)
            flat = torch.cat([v.reshape(-1) for v in weights.values()])
            rows.append({
                "loop": f"lightning_asyncfl, {' '.join(extra)}", "workers": workers, "threads": threads,
                "cores_used": min(cores, workers * threads), "seconds": summary["wall_time"],
                "updates_per_s": summary["client_updates"] / summary["wall_time"], "accuracy": summary["final_accuracy"],
                "max_abs_weight_difference": float((flat - hands[threads][0]).abs().max()),
            })  # fmt: skip
    print(f"\n{args.updates} client updates, {cores} cores; each ratio = client updates per second / the hand-written loop's "
          f"(with 1 intra-op thread, and with as many cores as the row uses)\n")
    print("| loop | workers x intra-op threads | seconds | client updates/s | vs hand-written, 1 thread | vs hand-written, same cores | final accuracy | max \\|w - w_hand\\| (same threads) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["ratio_to_hand_1_thread"] = r["updates_per_s"] / hands[1][1]
        r["ratio_to_hand_same_cores"] = r["updates_per_s"] / hands[min(cores, r["cores_used"]) if r["cores_used"] in hands else cores][1]
        diff = f"{r['max_abs_weight_difference']:.2e}" if "max_abs_weight_difference" in r else "-"
        print(f"| {r['loop']} | {r['workers']} x {r['threads']} | {r['seconds']:.1f} | {r['updates_per_s']:.3f} | {r['ratio_to_hand_1_thread']:.3f} "
              f"| {r['ratio_to_hand_same_cores']:.3f} | {r['accuracy']:.4f} | {diff} |")
    print(f"\nwritten {save('overhead', {'updates': args.updates, 'cores': cores, 'rows': rows})}")


if __name__ == "__main__":
    main()
