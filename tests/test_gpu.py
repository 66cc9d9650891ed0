"""On a CUDA GPU: the same experiment runs with clients and the global model on the device.

Marked ``gpu``: out of the default run, skipped where no GPU exists (CI never has one).
"""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.run import run


@pytest.mark.gpu
def test_default_experiment_on_cuda_matches_the_cpu_run_closely(make_cfg):
    cpu = run(make_cfg("server.max_steps=40", name="cpu"))
    gpu = run(make_cfg("server.max_steps=40", "client.accelerator=cuda", name="gpu"))

    assert gpu["steps"] == cpu["steps"] == 40
    assert gpu["client_updates"] == cpu["client_updates"]  # the virtual clock does not depend on the device
    cpu_weights = torch.load(f"{cpu['output_dir']}/final_model.pt", weights_only=True)
    gpu_weights = torch.load(f"{gpu['output_dir']}/final_model.pt", weights_only=True)
    for key, value in cpu_weights.items():
        torch.testing.assert_close(gpu_weights[key], value, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_parallel_executors_on_cuda_give_the_sequential_cuda_bytes(make_cfg, executor):
    # two workers on the same GPU, each on its own CUDA stream (threads) or process
    args = ["server.max_steps=30", "client.accelerator=cuda"]
    sequential = run(make_cfg(*args, name="seq"))
    parallel = run(make_cfg(*args, f"executor={executor}", "executor.workers=2", "executor.devices=[cuda:0,cuda:0]", name=executor))

    a = torch.load(f"{sequential['output_dir']}/final_model.pt", weights_only=True)
    b = torch.load(f"{parallel['output_dir']}/final_model.pt", weights_only=True)
    assert parallel["failed"] == 0
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
def test_batched_clients_on_cuda_match_the_per_client_cuda_run_closely(make_cfg):
    args = ["server.max_steps=30", "client.accelerator=cuda"]
    sequential = run(make_cfg(*args, name="seq"))
    batched = run(make_cfg(*args, "executor=batched", "executor.max_batch=8", name="batched"))

    a = torch.load(f"{sequential['output_dir']}/final_model.pt", weights_only=True)
    b = torch.load(f"{batched['output_dir']}/final_model.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_the_gpu_benchmark_runs_end_to_end_on_the_cpu_with_smoke():
    # the one prepared GPU command, shrunk to the CPU: every case runs, the table and the results are written
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--smoke", "--time-limit", "840"], cwd=root, capture_output=True, text=True, timeout=900
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((root / "benchmarks" / "results" / "gpu_smoke.json").read_text())["rows"]
    assert [(r["executor"], r["precision"]) for r in rows] == [
        ("sequential", "32-true"), ("threads", "32-true"), ("batched", "32-true"), ("sequential", "bf16-mixed"), ("threads", "bf16-mixed"),
    ]  # fmt: skip
    assert all(r["status"] == "ok" and r["client_updates"] == 8 for r in rows)
    by_case = {(r["executor"], r["precision"]): r for r in rows}
    assert by_case[("sequential", "32-true")]["speedup"] == 1.0
    assert by_case[("threads", "32-true")]["max_weight_difference"] == 0.0  # on the CPU, threads give the sequential bytes
    assert by_case[("batched", "32-true")]["within_tolerance"]
    assert "| batched | 32-true | ok |" in done.stdout
