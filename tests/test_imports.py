"""``import lightning_asyncfl`` stays cheap: what a run does not need is imported on first use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "ray", "optuna", "lightning.pytorch.trainer", "pytorch_lightning", "torchvision", "sklearn", "lightning")


def _imported_after(code: str) -> list[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_import_of_the_package_imports_no_heavy_module():
    modules = set(_imported_after("import lightning_asyncfl"))

    assert [name for name in HEAVY if name in modules] == []
    assert "torch" not in modules  # not even torch: every public name waits for its first use


def test_public_names_are_the_objects_of_their_modules():
    import lightning_asyncfl
    from lightning_asyncfl import run as run_module_function
    from lightning_asyncfl.aggregators import FedAsync
    from lightning_asyncfl.run import compose, run

    assert lightning_asyncfl.FedAsync is FedAsync
    assert lightning_asyncfl.compose is compose
    # the function, not the module of the same name, whichever was imported first
    assert lightning_asyncfl.run is run is run_module_function
    assert set(lightning_asyncfl.__all__) <= set(dir(lightning_asyncfl))
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        _ = lightning_asyncfl.nothing_here


@pytest.mark.parametrize("package", ["lightning_asyncfl.data", "lightning_asyncfl.models"])
def test_every_listed_name_of_a_subpackage_resolves(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name).__name__ == name


def test_submodule_run_is_the_function_even_when_imported_first():
    modules = _imported_after(
        "import lightning_asyncfl.run as imported\n"
        "import lightning_asyncfl\n"
        "assert lightning_asyncfl.run is imported is sys.modules['lightning_asyncfl.run'].run"
    )
    assert "lightning_asyncfl.run" in modules


def test_a_partition_imports_neither_torch_nor_lightning():
    modules = set(_imported_after("from lightning_asyncfl.data import Dirichlet"))

    assert [name for name in ("torch", "lightning", "sklearn", "matplotlib") if name in modules] == []
