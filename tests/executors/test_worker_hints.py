"""executor=processes says what a spawned worker needs: the ``__main__`` guard and importable classes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lightning_asyncfl
from tests.test_fit import LISTS, SHORT, _digits

ROOT = Path(__file__).resolve().parents[2]


def test_a_model_class_defined_in_a_function_is_refused_with_what_workers_need(tmp_path):
    # Prepare
    from tests.user_cnn import TinyCNN

    class Local(TinyCNN):
        pass

    x, y, x_test, y_test = _digits()

    # Execute
    with pytest.raises(TypeError) as error:
        lightning_asyncfl.fit([*SHORT, "executor=processes", "executor.workers=1"], data=lightning_asyncfl.data.TensorFederatedData(x, y, x_test, y_test),
                              partition=LISTS, model=Local, output_dir=tmp_path)  # fmt: skip

    # Assert
    text = str(error.value)
    assert "sends the model, data and trainer settings to its worker processes, so they must be picklable" in text and "Local" in text
    assert 'if __name__ == "__main__":' in text and "PYTHONPATH" in text and "executor=threads" in text


def test_a_script_without_the_main_guard_fails_with_the_guard_named(tmp_path):
    # Prepare: a user's script that starts a processes run at import time
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import lightning_asyncfl
        lightning_asyncfl.fit(["progress=false", "server.max_steps=2", "data.num_clients=4", "partition=iid",
                               "server.scheduler.concurrency=2", "executor=processes", "executor.workers=1",
                               "output_dir={tmp_path / 'out'}"])
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    # Execute
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    # Assert
    assert done.returncode != 0
    assert "before it was ready" in done.stderr and 'if __name__ == \\"__main__\\":' not in done.stderr
    assert 'start the run under `if __name__ == "__main__":`' in done.stderr
