"""Shared fixtures: compose the real ``conf/`` with Hydra and shrink it for fast tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lightning_asyncfl.executors import start_zygote
from lightning_asyncfl.run import compose

# Before any test computes, as `python -m lightning_asyncfl` does before its first run:
# executor=processes (start_method auto) forks its workers from this zygote.
start_zygote()

#: overrides that keep a composed experiment to about a second on 2 CPU cores; one intra-op
#: thread per job (the default, auto, takes every core: slower on a machine that runs tests in parallel)
SMALL = ["progress=false", "server.max_steps=12", "server.eval_every=6", "executor.num_threads=1"]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, small=True)``: the real config composed with Hydra, output in tmp_path."""

    def _make(*overrides: str, small: bool = True, name: str = "run") -> DictConfig:
        base = [f"output_dir={tmp_path / name}"] + (SMALL if small else ["progress=false"])
        return compose(base + list(overrides))

    return _make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
