"""What per-client evaluation costs: one batched pass over every client's test data, against one loader per client.

    python benchmarks/client_eval.py                         # MLP, 12,000 test samples over 100 and 1,000 clients
    python benchmarks/client_eval.py --model cnn --clients 100 1000 10000

For each number of clients, 60,000 MNIST-shaped samples are split IID over the clients and
each client holds out 20% as its own test data (12,000 samples in all). Timed, best of
``--repeats``: the global evaluation on a 10,000-sample test set (what every evaluation
already does), :class:`ClientEvaluator` (one pass over the 12,000 samples in batches of
1024, sums per client by ``bincount``), and the naive way, one ``DataLoader`` per client
through the same module. The two per-client results are checked equal. Then the default
experiment is run with and without ``eval.clients_every`` to show the cost inside a run.
Results: ``benchmarks/results/client_eval.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--run-steps", type=int, default=200, help="versions of the in-run comparison (0: skip it)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset, TensorDataset

    from lightning_asyncfl.client import Evaluator
    from lightning_asyncfl.data.datamodule import client_test_split
    from lightning_asyncfl.evaluation import ClientEvaluator
    from lightning_asyncfl.models import CNN, MLP
    from lightning_asyncfl.run import compose, run
    from lightning_asyncfl.state import ModelState

    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.rand(60_000, 1, 28, 28, generator=g), torch.randint(0, 10, (60_000,), generator=g))
    test = TensorDataset(torch.rand(10_000, 1, 28, 28, generator=g), torch.randint(0, 10, (10_000,), generator=g))
    torch.manual_seed(0)
    model = (CNN(input_shape=[1, 28, 28], num_classes=10) if args.model == "cnn" else MLP(input_shape=[1, 28, 28], num_classes=10, hidden=[64]))
    state = ModelState.from_module(model)
    rows = []
    global_eval = Evaluator(copy.deepcopy(model), test, batch_size=1024, accelerator=args.accelerator)
    global_s = _best(lambda: global_eval.evaluate(state), args.repeats)
    for clients in args.clients:
        parts = np.array_split(np.random.default_rng(0).permutation(60_000), clients)
        _, tests = client_test_split(parts, 0.2, seed=0)
        indices = [torch.from_numpy(t) for t in tests]
        batched = ClientEvaluator(copy.deepcopy(model), train, indices, batch_size=1024, accelerator=args.accelerator)
        batched_s = _best(lambda: batched.per_client(state), args.repeats)
        module = batched.module

        def naive() -> np.ndarray:
            accuracy = np.zeros(clients)
            with torch.inference_mode():
                for k, idx in enumerate(indices):
                    correct = 0
                    for x, y in DataLoader(Subset(train, idx.tolist()), batch_size=1024):
                        logits = module(x.to(batched.device))
                        correct += int((logits.argmax(1) == y.to(batched.device)).sum())
                        F.cross_entropy(logits, y.to(batched.device), reduction="sum")
                    accuracy[k] = correct / len(idx)
            return accuracy

        naive_s = _best(naive, args.repeats)
        assert np.allclose(naive(), batched.per_client(state)["accuracy"]), "the batched and the naive per-client accuracies differ"
        samples = sum(len(t) for t in tests)
        rows.append({"clients": clients, "client_test_samples": samples, "global_eval_s": global_s, "batched_s": batched_s,
                     "one_loader_per_client_s": naive_s, "speedup": naive_s / batched_s})  # fmt: skip
        print(f"{clients} clients: batched {batched_s * 1000:.1f} ms, one loader per client {naive_s * 1000:.1f} ms", file=sys.stderr)

    in_run = []
    if args.run_steps:
        with tempfile.TemporaryDirectory() as tmp:
            for name, extra in (("off", []), ("every evaluation", ["eval.clients_every=50", "partition.client_test_fraction=0.2"])):
                summary = run(compose(["progress=false", f"output_dir={Path(tmp) / name.replace(' ', '_')}", f"server.max_steps={args.run_steps}",
                                       "server.eval_every=50", "checkpoint.enabled=false", *extra]))  # fmt: skip
                in_run.append({"per_client": name, "loop_wall_s": summary["wall_time"], "steps": summary["steps"]})
                print(f"run, per-client evaluation {name}: {summary['wall_time']:.2f} s", file=sys.stderr)

    path = save("client_eval", {"model": args.model, "accelerator": args.accelerator, "rows": rows, "in_run": in_run})
    print(f"model {args.model}; global evaluation of 10,000 test samples: {global_s * 1000:.1f} ms")
    print("| clients | client test samples | batched (ClientEvaluator) | one loader per client | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['client_test_samples']} | {r['batched_s'] * 1000:.1f} ms | {r['one_loader_per_client_s'] * 1000:.1f} ms | {r['speedup']:.1f}× |")
    for r in in_run:
        print(f"run of {r['steps']} versions, per-client evaluation {r['per_client']}: loop wall time {r['loop_wall_s']:.2f} s")
    print(f"results in {path}")


if __name__ == "__main__":
    main()
