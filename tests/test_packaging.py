"""The wheel ships the configs as lightning_asyncfl.conf, so the CLI works from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: build-system.requires of pyproject.toml: PEP 639 license strings need setuptools >= 77
MIN_SETUPTOOLS = 77
#: what is not part of the source tree a wheel is built from
NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "outputs", "multirun", "site"
)


def _setuptools_major() -> int | None:
    try:
        return int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        return None


def test_wheel_contains_every_config_and_the_entry_point(tmp_path):
    # Prepare: build from a copy, so the shared checkout gets no build/ or *.egg-info
    major = _setuptools_major()
    if major is None or major < MIN_SETUPTOOLS:
        pytest.skip(f"--no-build-isolation needs setuptools>={MIN_SETUPTOOLS} in this environment, found {major}")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    wheels = tmp_path / "wheels"

    # Execute
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    [wheel] = wheels.glob("lightning_asyncfl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    yamls = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert "config.yaml" in yamls and len(yamls) > 1
    missing = [f"lightning_asyncfl/conf/{rel}" for rel in yamls if f"lightning_asyncfl/conf/{rel}" not in names]
    assert missing == []
    assert "lightning_asyncfl/conf/__init__.py" in names
    assert "lightning_asyncfl/__main__.py" in names
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "lightning_asyncfl").rglob("*.py") if "__pycache__" not in p.parts)
    assert [m for m in modules if m not in names] == []  # every subpackage is listed in pyproject.toml
    assert not any(name.startswith(("conf/", "tests/")) for name in names)
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "lightning-asyncfl = lightning_asyncfl.__main__:main" in text
