"""A ``_target_`` override that keeps the preset's other keys: the error names them all and the exact ``~key`` overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import build, compose

ROOT = Path(__file__).resolve().parents[1]
#: the keys of conf/model/mlp.yaml that tests.user_cnn.TinyCNN(num_classes, lr) does not take
EXTRA = ["input_shape", "hidden", "dropout", "optimizer", "momentum", "weight_decay"]
DROP = " ".join(f"~model.{k}" for k in EXTRA)


def test_the_error_lists_every_preset_key_the_class_does_not_take_and_the_overrides_that_drop_them():
    # Execute
    with pytest.raises(ConfigError) as error:
        build(compose(["model._target_=tests.user_cnn.TinyCNN"]))

    # Assert
    assert error.value.problems == [
        f"model: tests.user_cnn.TinyCNN does not take the key(s) {', '.join(EXTRA)} ({', '.join(EXTRA)} set by the preset of the model group). "
        f"Drop them with the overrides: {DROP} ; or replace the whole node: ~model '+model={{_target_: tests.user_cnn.TinyCNN, ...}}' "
        "(only the keys you give), or write your own model/NAME.yaml in a config directory and run with --config-dir=DIR model=NAME"
    ]


def test_the_suggested_overrides_and_the_whole_node_replacement_both_build():
    # Execute
    dropped = build(compose(["model._target_=tests.user_cnn.TinyCNN", *DROP.split()]))
    replaced = build(compose(["~model", "+model={_target_: tests.user_cnn.TinyCNN, lr: 0.2}"]))

    # Assert
    assert type(dropped["model"]).__name__ == type(replaced["model"]).__name__ == "TinyCNN"
    assert replaced["model"].lr == 0.2


def test_the_command_line_names_the_preset_and_the_keys_given_there(tmp_path):
    # Execute
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cli = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "model._target_=tests.user_cnn.TinyCNN", "model.hidden=[8]", "progress=false", f"output_dir={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert
    assert cli.returncode == 2
    preset = [k for k in EXTRA if k != "hidden"]
    assert f"({', '.join(preset)} set by the preset model=mlp; hidden given on the command line)" in cli.stderr
    assert f"Drop them with the overrides: {DROP} ;" in cli.stderr


def test_a_class_that_takes_every_key_or_kwargs_is_not_checked():
    parts = build(compose(["model._target_=lightning_asyncfl.models.MLP", "progress=false"]))

    assert type(parts["model"]).__name__ == "MLP"
