"""Image datasets: loaded through the real torchvision classes from files in their real format.

The fixtures (``tests/data/vision_fixtures.py``) write tiny datasets where torchvision reads
them with ``download=False``; CIFAR and SVHN tests skip only torchvision's MD5 comparison
(``skip_md5``), since a fixture cannot match the official files' checksums.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_asyncfl.data import CIFAR10, CIFAR100, EMNIST, MNIST, SVHN, FashionMNIST, random_crop_flip
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.run import run
from tests.data import vision_fixtures as vf


def _grey(images: np.ndarray) -> np.ndarray:
    return images[:, None]


def _upright(images: np.ndarray) -> np.ndarray:  # EMNIST stores each image transposed
    return images.transpose(0, 2, 1)[:, None]


def _hwc(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2)


#: conf/data option -> (class, on-disk images -> expected uint8 NCHW, needs skip_md5)
CASES: dict[str, tuple[type, Callable[[np.ndarray], np.ndarray], bool]] = {
    "mnist": (MNIST, _grey, False),
    "fashion_mnist": (FashionMNIST, _grey, False),
    "emnist": (EMNIST, _upright, False),
    "cifar10": (CIFAR10, _hwc, True),
    "cifar100": (CIFAR100, _hwc, True),
    "svhn": (SVHN, _hwc, True),
}
NAMES = list(CASES)


def _load(name: str, root: Path, monkeypatch: pytest.MonkeyPatch, **kwargs):
    cls, _, md5 = CASES[name]
    if md5:
        vf.skip_md5(monkeypatch)
    dm = cls(num_clients=4, root=str(root), **kwargs)
    dm.setup()
    return dm


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)


@pytest.mark.parametrize("name", NAMES)
def test_loads_the_real_format_unnormalised(name, tmp_path, monkeypatch):
    # Prepare
    written = vf.WRITERS[name](tmp_path)
    _, to_nchw, _ = CASES[name]

    # Execute
    dm = _load(name, tmp_path, monkeypatch, normalize=False)

    # Assert
    for dataset, images, labels in (
        (dm.train_dataset, written.train_images, written.train_labels),
        (dm.test_dataset, written.test_images, written.test_labels),
    ):
        x, y = dataset.tensors
        expected = to_nchw(images)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape) == expected.shape and tuple(x.shape[1:]) == dm.input_shape
        assert x.is_contiguous()
        assert torch.equal(x, _pixels(expected))
        assert y.tolist() == labels.tolist()
    x = dm.train_dataset.tensors[0]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(dm.train_targets.tolist()) == set(written.train_labels.tolist())
    assert sum(dm.num_samples) == len(written.train_labels)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "emnist"])
def test_normalises_with_the_standard_statistics(name, tmp_path, monkeypatch):
    # Prepare
    written = vf.WRITERS[name](tmp_path)
    cls, to_nchw, _ = CASES[name]
    mean, std = torch.tensor(cls.mean).view(1, -1, 1, 1), torch.tensor(cls.std).view(1, -1, 1, 1)

    # Execute
    dm = _load(name, tmp_path, monkeypatch)

    # Assert
    for dataset, images in ((dm.train_dataset, written.train_images), (dm.test_dataset, written.test_images)):
        assert torch.allclose(dataset.tensors[0], (_pixels(to_nchw(images)) - mean) / std, atol=1e-6)


def test_emnist_normalises_with_its_training_split_statistics(tmp_path):
    vf.write_emnist(tmp_path)

    dm = EMNIST(num_clients=4, root=str(tmp_path))
    dm.setup()

    x = dm.train_dataset.tensors[0].double()
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std(correction=0)) - 1.0) < 1e-6


def test_emnist_letters_keeps_torchvisions_labels_1_to_26(tmp_path):
    written = vf.write_emnist(tmp_path, split="letters")

    dm = EMNIST(num_clients=4, split="letters", num_classes=27, root=str(tmp_path))
    dm.setup()

    assert dm.train_dataset.tensors[1].tolist() == written.train_labels.tolist()
    assert set(written.train_labels.tolist()) == set(range(1, 27))


@pytest.mark.parametrize(
    ("kwargs", "key", "allowed"),
    [
        ({"split": "kanji"}, "split", "one of: byclass, bymerge, balanced, letters, digits, mnist"),
        ({"split": "digits"}, "num_classes", "10 for split='digits'"),
        ({"split": "balanced", "num_classes": 62}, "num_classes", "47 for split='balanced'"),
    ],
)
def test_emnist_split_and_num_classes_are_checked(kwargs, key, allowed):
    with pytest.raises(InvalidValue) as info:
        EMNIST(num_clients=4, **kwargs)

    assert (info.value.key, info.value.allowed) == (key, allowed)


@pytest.mark.parametrize(("kwargs", "key"), [({"download": "yes"}, "download"), ({"normalize": 1}, "normalize"), ({"root": ""}, "root")])
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(InvalidValue) as info:
        MNIST(num_clients=4, **kwargs)

    assert info.value.key == key


def test_relative_root_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    dm = CIFAR10(num_clients=4, root="datasets/here", augment_train=False)

    assert dm.root == str(tmp_path / "datasets" / "here")
    assert repr(dm).startswith(f"CIFAR10(num_clients=4, root={dm.root!r}, download=False, check_integrity=True, normalize=True, augment_train=False, ")


# --- missing files, failed downloads ---------------------------------------------------

#: conf/data option -> (expected directory below root, one expected file)
EXPECTED = {
    "mnist": ("MNIST/raw", "train-images-idx3-ubyte"),
    "fashion_mnist": ("FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
    "emnist": ("EMNIST/raw", "emnist-balanced-train-images-idx3-ubyte"),
    "cifar10": ("cifar-10-batches-py", "data_batch_1"),
    "cifar100": ("cifar-100-python", "train"),
    "svhn": (".", "train_32x32.mat"),
}


@pytest.mark.parametrize("name", NAMES)
def test_missing_files_give_one_config_error_naming_the_directory_files_and_fix(name, tmp_path):
    cls, _, _ = CASES[name]
    directory, file = EXPECTED[name]
    dm = cls(num_clients=4, root=str(tmp_path))

    with pytest.raises(ConfigError) as info:
        dm.setup()

    (problem,) = info.value.problems
    assert problem.startswith(f"data.root: {cls.name} files not found: expected ")
    assert f" in {(tmp_path / directory).resolve()} " in problem and file in problem
    assert "data.download=true" in problem and "\n" not in problem
    assert not any(tmp_path.iterdir()), "download=false must not create anything"


@pytest.mark.parametrize("name", NAMES)
def test_download_without_network_gives_the_same_guidance(name, tmp_path, monkeypatch):
    # Prepare: every URL fails as it does offline (and nothing is fetched where there is a network)
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cls, _, _ = CASES[name]
    dm = cls(num_clients=4, root=str(tmp_path), download=True)

    # Execute
    with pytest.raises(ConfigError) as info:
        dm.setup()

    # Assert
    (problem,) = info.value.problems
    assert problem.startswith(f"data.download: could not download {cls.name} (")
    assert "Name or service not known" in problem and EXPECTED[name][1] in problem
    assert "data.download=true where there is internet" in problem and "\n" not in problem


def test_fixture_files_fail_torchvisions_md5_check_without_the_patch(tmp_path):
    vf.write_cifar10(tmp_path)

    with pytest.raises(ConfigError) as info:
        CIFAR10(num_clients=4, root=str(tmp_path)).setup()

    (problem,) = info.value.problems
    assert problem.startswith("data.root: CIFAR-10 files are unreadable or fail torchvision's checksum (RuntimeError: ")
    assert "download=True" not in problem and "data.download=true" in problem


def test_missing_mnist_through_run_is_the_one_problem(make_cfg, tmp_path):
    cfg = make_cfg("data=mnist", f"data.root={tmp_path / 'empty'}")

    with pytest.raises(ConfigError) as info:
        run(cfg)

    (problem,) = info.value.problems
    assert problem.startswith("data.root: MNIST files not found: expected train-images-idx3-ubyte, ")
    assert str(tmp_path / "empty" / "MNIST" / "raw") in problem


def test_missing_mnist_through_the_cli_exits_2_without_a_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    result = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "data=mnist", f"data.root={empty}", "progress=false", f"output_dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "MNIST files not found: expected train-images-idx3-ubyte" in result.stderr
    assert str(empty / "MNIST" / "raw") in result.stderr and "data.download=true" in result.stderr


# --- CIFAR augmentation ----------------------------------------------------------------


def _draws(seed: int, n: int, padding: int = 4) -> tuple[list[int], list[int], list[bool]]:
    """The offsets and flip bits random_crop_flip draws from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    cols = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    flips = torch.randint(0, 2, (n,), generator=g).bool()
    return rows.tolist(), cols.tolist(), flips.tolist()


def _by_hand(image: np.ndarray, row: int, col: int, flip: bool, fill: np.ndarray, padding: int = 4) -> np.ndarray:
    c, h, w = image.shape
    padded = np.broadcast_to(fill[:, None, None], (c, h + 2 * padding, w + 2 * padding)).copy()
    padded[:, padding : padding + h, padding : padding + w] = image
    crop = padded[:, row : row + h, col : col + w]
    return crop[:, :, ::-1] if flip else crop


def test_random_crop_flip_is_deterministic_per_seed_and_keeps_the_shape():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))

    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cifar_augment_matches_a_hand_computed_padded_crop_and_flip(tmp_path, monkeypatch):
    # Prepare: a seed whose first sample is shifted (not the centre crop)
    vf.write_cifar10(tmp_path)
    dm = _load("cifar10", tmp_path, monkeypatch)
    x = dm.train_dataset.tensors[0][:8]
    rows, cols, flips = _draws(3, 8)
    assert (rows[0], cols[0]) != (4, 4)
    fill = (-torch.tensor(CIFAR10.mean) / torch.tensor(CIFAR10.std)).numpy()  # black, normalised

    # Execute
    out = dm.augment(x, torch.Generator().manual_seed(3))

    # Assert
    for k in range(8):
        expected = _by_hand(x[k].numpy(), rows[k], cols[k], flips[k], fill)
        assert np.allclose(out[k].numpy(), expected, atol=0), k
    assert not torch.equal(out[0], x[0])


def test_crops_shift_content_and_flips_flip():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    g_seed = next(s for s in range(100) if _draws(s, 2, padding=1)[2] == [True, False])
    rows, cols, _ = _draws(g_seed, 2, padding=1)

    out = random_crop_flip(x, torch.Generator().manual_seed(g_seed), padding=1)
    only_flip = random_crop_flip(x, torch.Generator().manual_seed(g_seed), padding=0)

    assert torch.equal(only_flip[0], x[0].flip(-1)) and torch.equal(only_flip[1], x[1])
    di, dj = rows[1] - 1, cols[1] - 1  # sample 1 is not flipped: out[i, j] = x[i + di, j + dj]
    for i in range(4):
        for j in range(4):
            inside = 0 <= i + di < 4 and 0 <= j + dj < 4
            assert float(out[1, 0, i, j]) == (float(x[1, 0, i + di, j + dj]) if inside else 0.0)


def test_augment_train_false_turns_augmentation_off(tmp_path):
    on = CIFAR10(num_clients=4, root=str(tmp_path))
    off = CIFAR100(num_clients=4, root=str(tmp_path), augment_train=False)
    x = torch.rand(4, 3, 32, 32)

    assert on.has_augmentation and not off.has_augmentation
    assert off.augment(x, torch.Generator().manual_seed(0)) is x
    assert not MNIST(num_clients=4).has_augmentation and not SVHN(num_clients=4).has_augmentation


@pytest.mark.gpu
def test_random_crop_flip_on_cuda_equals_the_cpu_result():
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fill = torch.tensor([-1.0, 0.5, 2.0])

    cpu = random_crop_flip(x, torch.Generator().manual_seed(5), fill=fill)
    gpu = random_crop_flip(x.cuda(), torch.Generator().manual_seed(5), fill=fill)

    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


# --- end to end ------------------------------------------------------------------------

E2E = [
    pytest.param("mnist", ["partition=shards", "model=cnn"], id="mnist-cnn"),
    pytest.param("cifar10", ["partition=iid", "model=cnn"], id="cifar10-cnn"),
]
if (Path(__file__).parents[2] / "conf" / "model" / "resnet18.yaml").is_file():  # about 5 s on 2 CPU cores
    E2E.append(pytest.param("cifar10", ["partition=iid", "model=resnet18"], id="cifar10-resnet18", marks=pytest.mark.slow))


@pytest.mark.parametrize(("name", "overrides"), E2E)
def test_a_small_run_trains_on_the_fixture_files(name, overrides, make_cfg, tmp_path, monkeypatch):
    # Prepare
    root = tmp_path / "datasets"
    vf.WRITERS[name](root)
    vf.skip_md5(monkeypatch)
    cfg = make_cfg(
        f"data={name}", f"data.root={root}", "data.num_clients=4", "server.scheduler.concurrency=2", *overrides,
        "progress=false", "server.max_steps=4", "server.eval_every=2", small=False,
    )  # fmt: skip

    # Execute
    summary = run(cfg)

    # Assert
    assert summary["steps"] == 4 and summary["stop_reason"] == "max_steps"
    assert summary["final_accuracy"] is not None and 0.0 <= summary["final_accuracy"] <= 1.0
    assert (Path(cfg.output_dir) / "summary.json").is_file()
