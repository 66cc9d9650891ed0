"""Clients benchmark: the same total data over 100, 10,000 and 100,000 clients.

200,000 synthetic 1x28x28 images (labels from a fixed random linear map, written as real
MNIST files) split IID over N clients, the default MLP, FedAsync with 10 clients in flight,
1 local epoch of batch 50, 500 client updates, each setting in a fresh process. Reports
per setting: time per client update, the framework's own time per update (the loop's
time less local training and evaluation, measured by timing ``ClientTrainer.train`` and
``Evaluator.evaluate``), and the peak resident memory of the process. With the same
total data, a client of a larger federation holds fewer samples, so its local training
is shorter: the framework's own time and the memory are the figures that must not grow
with N.

    python benchmarks/clients.py
    python benchmarks/clients.py --clients 100 100000 --updates 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, save, write_mnist_like  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import lightning_asyncfl.client as client
from lightning_asyncfl import compose, run

spent = {"train": 0.0, "evaluate": 0.0}
def timed(name, method):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started
    return wrapper
client.ClientTrainer.train = timed("train", client.ClientTrainer.train)
client.Evaluator.evaluate = timed("evaluate", client.Evaluator.evaluate)
summary = run(compose(sys.argv[1:]))
own = summary["wall_time"] - summary["executor_start_time"] - spent["train"] - spent["evaluate"]
print("RESULT " + json.dumps({
    "client_updates": summary["client_updates"], "wall_s": summary["wall_time"],
    "train_s": spent["train"], "evaluate_s": spent["evaluate"], "own_s": own,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", nargs="+", type=int, default=[100, 10_000, 100_000])
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200_000, help="total training samples")
    args = parser.parse_args()

    root = write_mnist_like(DATA_ROOT.with_name(DATA_ROOT.name + f"_{args.samples}"), n_train=args.samples)
    rows = []
    for n in args.clients:
        print(f"{n} clients ...", file=sys.stderr, flush=True)
        overrides = [
            "data=mnist", f"data.root={root}", f"data.num_clients={n}", "partition=iid", "model=mlp",
            "client.batch_size=50", "server=fedasync", "server.scheduler.concurrency=10",
            f"server.max_steps={args.updates}", f"server.eval_every={args.updates}", "progress=false",
            f"output_dir={Path('/tmp') / f'lightning_asyncfl_bench_clients_{n}'}",
        ]
        done = subprocess.run([sys.executable, "-c", CHILD, *overrides], capture_output=True, text=True)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"{n} clients failed:\n{done.stderr[-3000:]}")
        result = json.loads(line.removeprefix("RESULT "))
        u = result["client_updates"]
        rows.append({"clients": n, **result, "ms_per_update": 1000 * result["wall_s"] / u, "own_ms_per_update": 1000 * result["own_s"] / u})
    first = rows[0]
    print(f"\n{args.samples} training samples, {args.updates} client updates per setting\n")
    print("| clients | samples per client | ms per update | framework's own ms per update | ratio to the first | peak RSS MiB | ratio to the first |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["own_ratio"] = r["own_ms_per_update"] / first["own_ms_per_update"]
        r["rss_ratio"] = r["peak_rss_mib"] / first["peak_rss_mib"]
        print(f"| {r['clients']:,} | {args.samples / r['clients']:g} | {r['ms_per_update']:.2f} | {r['own_ms_per_update']:.2f} | "
              f"{r['own_ratio']:.2f}x | {r['peak_rss_mib']:.0f} | {r['rss_ratio']:.2f}x |")
    print(f"\nwritten {save('clients', {'samples': args.samples, 'updates': args.updates, 'rows': rows})}")


if __name__ == "__main__":
    main()
