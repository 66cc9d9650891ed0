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


#: every name that lightning_asyncfl.client, .delays and .data.partition defined when each was one file
SPLIT_MODULES = {
    "lightning_asyncfl.client": [
        "ACCELERATORS", "PRECISIONS", "OPTIMIZER_STATE_KEY", "check_client_settings", "ClientTrainer", "TrainerSpec", "Evaluator",
        "check_model", "intra_op_threads", "PackedIndices", "_fabric_device", "_owner", "_FabricWorker", "_batches",
        "_DeviceTensors", "_on_device", "_reset_torchmetrics", "_has_torchmetrics", "_pack_state", "_unpack_state",
        "_EpochOrders", "_seed_device",
    ],
    "lightning_asyncfl.delays": [
        "MAX_SECONDS", "DelayModel", "NoDelay", "ConstantDelay", "UniformDelay", "ExponentialDelay", "LogNormalDelay",
        "PerClientDelay", "SteppedDelay", "_FixedPerClient", "_number", "_seconds", "_integer",
    ],
    "lightning_asyncfl.data.partition": [
        "Partition", "IID", "Dirichlet", "Shards", "Natural", "LabelsPerClient", "QuantitySkew", "proportional_sizes", "_is_int",
    ],
}  # fmt: skip

#: (a module a part moved to, imported first; the old module) for each split
PARTS_FIRST = [
    ("lightning_asyncfl.fixed_delays", "lightning_asyncfl.delays"),
    ("lightning_asyncfl.client.check", "lightning_asyncfl.client"),
    ("lightning_asyncfl.data.partition_draws", "lightning_asyncfl.data.partition"),
]


@pytest.mark.parametrize(("first", "old"), PARTS_FIRST)
def test_every_name_of_a_split_module_is_importable_from_it_whichever_part_is_imported_first(first, old):
    names = SPLIT_MODULES[old]

    modules = _imported_after(f"import {first}\nfrom {old} import {', '.join(names)}")

    assert first in modules and old in modules


def test_a_public_name_of_a_split_module_keeps_its_module_path_where_it_is_recorded():
    # a run's error names the delay base by its module path, and fit() records a given partition's
    from lightning_asyncfl.data.partition import IID, Dirichlet, LabelsPerClient, Natural, QuantitySkew, Shards
    from lightning_asyncfl.delays import DelayModel

    assert f"{DelayModel.__module__}.{DelayModel.__name__}" == "lightning_asyncfl.delays.DelayModel"
    assert {cls.__module__ for cls in (IID, Dirichlet, Shards, Natural, LabelsPerClient, QuantitySkew)} == {"lightning_asyncfl.data.partition"}


def test_packed_index_lists_import_no_lightning():
    modules = set(_imported_after("from lightning_asyncfl.data.packed import PackedIndices"))

    assert [name for name in ("lightning", "matplotlib") if name in modules] == []
