"""Tiny LEAF datasets written in LEAF's exact preprocessed JSON format.

LEAF's ``preprocess.sh`` writes ``data/train/*.json`` and ``data/test/*.json``; each file
holds ``users``, ``num_samples``, ``hierarchies`` (Shakespeare, FEMNIST) and
``user_data: {user: {"x": [...], "y": [...]}}``. The writers here spread the users over
two files per split (LEAF writes one file per chunk of users), give every user a
different number of samples, and return what they wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightning_asyncfl.data.leaf import ALL_LETTERS

Users = dict[str, dict[str, dict[str, list]]]  # split -> user -> {"x", "y"}


def _write(root: Path, split: str, users: dict[str, dict[str, list]], *, files: int = 2) -> None:
    directory = root / split
    directory.mkdir(parents=True, exist_ok=True)
    names = list(users)
    for f, chunk in enumerate(np.array_split(np.arange(len(names)), files)):
        part = [names[i] for i in chunk]
        content = {
            "users": part,
            "num_samples": [len(users[u]["y"]) for u in part],
            "hierarchies": [],
            "user_data": {u: users[u] for u in part},
        }
        (directory / f"all_data_{f}_niid_1_keep_0_{split}_9.json").write_text(json.dumps(content))


def write_femnist(root: Path, sizes: list[tuple[int, int]], *, seed: int = 0) -> Users:
    """Writers ``f0000_00 ..`` with ``(train, test)`` sizes each; x: 784 floats in [0, 1], y in [0, 62)."""
    rng = np.random.default_rng(seed)
    out: Users = {"train": {}, "test": {}}
    for k, (n_train, n_test) in enumerate(sizes):
        user = f"f{k:04d}_{k % 100:02d}"
        for split, n in (("train", n_train), ("test", n_test)):
            if n:
                x = rng.random((n, 784)).round(4).tolist()
                y = rng.integers(0, 62, n).tolist()
                out[split][user] = {"x": x, "y": y}
    _write(root, "train", out["train"])
    _write(root, "test", out["test"])
    return out


def write_shakespeare(root: Path, sizes: list[tuple[int, int]], *, seed: int = 0) -> Users:
    """Roles ``THE_PLAY_ROLEk`` with ``(train, test)`` sizes; x: 80 characters of LEAF's vocabulary, y the next one."""
    rng = np.random.default_rng(seed)
    out: Users = {"train": {}, "test": {}}
    for k, (n_train, n_test) in enumerate(sizes):
        user = f"THE_TRAGEDY_OF_KING_LEAR_ROLE{k}"
        text = "".join(ALL_LETTERS[i] for i in rng.integers(0, len(ALL_LETTERS), n_train + n_test + 80))
        windows = [(text[i : i + 80], text[i + 80]) for i in range(n_train + n_test)]
        for split, part in (("train", windows[:n_train]), ("test", windows[n_train:])):
            if part:
                out[split][user] = {"x": [w for w, _ in part], "y": [c for _, c in part]}
    _write(root, "train", out["train"])
    _write(root, "test", out["test"])
    return out
