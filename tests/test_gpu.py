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
