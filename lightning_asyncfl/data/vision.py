"""Image datasets read by torchvision's own dataset classes, converted once to tensors.

:class:`TorchvisionDataModule` constructs a ``torchvision.datasets`` class for the train
and the test split (``download=self.download``, no transform), takes its ``.data`` and
``.targets`` (no per-item PIL), and converts each whole split once to a ``TensorDataset``:
float32 features in [0, 1] shaped (N, C, H, W), optionally normalised per channel, and
int64 labels. A dataset subclass names its torchvision class, its files and its statistics
(see :mod:`~lightning_asyncfl.data.mnist`, :mod:`~lightning_asyncfl.data.cifar`,
:mod:`~lightning_asyncfl.data.svhn`).

``check_integrity=false`` skips torchvision's MD5 check (CIFAR, SVHN; MNIST-like files
have none) for files a user prepared, e.g. a subset of the official release: SVHN's
``.mat`` files are then read by torchvision as usual (SciPy, no code runs), and CIFAR's
pickles by :func:`safe_unpickle`, which builds only dicts, lists, strings, numbers and
NumPy arrays, never an arbitrary object (an unverified pickle must not run code).

Files that are missing, unreadable or that fail torchvision's checksum, and a download
that fails, all raise a :class:`ConfigError` with one line naming the dataset, the
expected directory and files, and the fix (``data.download=true`` where there is
internet, or copy the files there), so a run stops before any training without a
traceback.

:func:`random_crop_flip` is the standard CIFAR train-time augmentation (a random 32×32
crop of the image padded by 4, then a horizontal flip with probability 1/2) on a batch of
tensors, vectorised and deterministic for a generator.
"""

from __future__ import annotations

import abc
import os
import pickle
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_asyncfl.data.datamodule import FederatedDataModule
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import ConfigError, checking

_MAX_CAUSE = 240  # characters of a torchvision error quoted in the one-line problem
#: what :func:`safe_unpickle` may build besides plain values: NumPy arrays and dtypes
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3
}  # fmt: skip


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to build {module}.{name}: only plain values and NumPy arrays are read")
        return super().find_class(module, name)


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Read a pickle that may hold only plain values and NumPy arrays (CIFAR's batches).

    Raises:
        pickle.UnpicklingError: the file names any other class or function.
    """
    with open(path, "rb") as f:
        return _SafeUnpickler(f, encoding="latin1").load()


def random_crop_flip(
    x: Tensor, generator: torch.Generator, *, padding: int = 4, flip: bool = True, fill: Tensor | None = None
) -> Tensor:
    """Per sample: a random crop of the original size from ``x`` padded by ``padding``, then maybe a flip.

    As torchvision's ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip()``: sample
    ``n`` keeps rows ``i_n .. i_n + H - 1`` and columns ``j_n .. j_n + W - 1`` of the padded
    image, ``i_n, j_n`` uniform in ``[0, 2 * padding]``, and is mirrored left-right when
    its flip bit is 1. The draws (all ``i``, then all ``j``, then all flip bits) come
    from ``generator`` on the CPU; the gather runs on ``x``'s device, with no Python loop.

    Args:
        x: a batch of images ``(N, C, H, W)``, on any device.
        generator: the only source of randomness (a CPU generator).
        padding: pixels added on each side before cropping; >= 0.
        flip: whether to flip horizontally with probability 1/2.
        fill: the value of the padding per channel, shape ``(C,)``; zeros when ``None``.

    Returns:
        A new tensor shaped like ``x``.
    """
    n, c, h, w = x.shape
    rows = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    cols = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool() if flip else torch.zeros(n, dtype=torch.bool)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    row_idx = rows[:, None] + ar_h  # (n, h)
    col_idx = cols[:, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (n, w)
    padded = x.new_zeros((n, c, h + 2 * padding, w + 2 * padding))
    if fill is not None:
        padded += fill.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    device = x.device
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        row_idx.to(device)[:, None, :, None],
        col_idx.to(device)[:, None, None, :],
    ]


def pixel_statistics(images: Tensor) -> tuple[Tensor, Tensor]:
    """Exact per-channel mean and (population) std of uint8 images ``(N, C, H, W)`` scaled to [0, 1].

    Computed from a histogram of the 256 pixel values per channel, so it needs no float
    copy of the images.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    counts = torch.stack([torch.bincount(images[:, c].reshape(-1), minlength=256) for c in range(images.shape[1])])
    p = counts.double() / counts.sum(dim=1, keepdim=True)
    mean = p @ values
    var = (p @ values**2 - mean**2).clamp_min(0.0)
    return mean.float(), var.sqrt().clamp_min(1e-12).float()


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line, without torchvision's advice (``download=True`` is not our key)."""
    text = " ".join(str(error).replace("You can use download=True to download it", "").split()).rstrip(". ")
    text = text or "no message"
    if len(text) > _MAX_CAUSE:
        text = text[: _MAX_CAUSE - 3] + "..."
    return f"{type(error).__name__}: {text}"


class TorchvisionDataModule(FederatedDataModule):
    """A torchvision image dataset, each split converted once to float32 (N, C, H, W) tensors.

    Subclasses set :attr:`name`, :attr:`torchvision_class`, :attr:`mean` and :attr:`std`,
    and write :meth:`_expected_files` and :meth:`_arrays` (and :meth:`_open` when the
    torchvision class takes more than ``train``).

    Args:
        num_clients: how many clients share the training set; >= 1.
        root: the directory torchvision reads (and downloads into); a relative path is
            resolved against the current working directory when the object is built.
        download: let torchvision download the files that are missing (needs internet).
        check_integrity: check the files' MD5 against the official release (torchvision's
            check); False reads files a user prepared (see the module docstring).
        normalize: subtract the per-channel mean and divide by the std (:attr:`mean`,
            :attr:`std`); False keeps the pixels in [0, 1].
        input_shape: must be the dataset's sample shape.
        num_classes: the number of classes; every label is below it.
        partition: how to split the training set; ``IID()`` when ``None``.
        seed: the run's seed (loading uses no randomness).
    """

    name: ClassVar[str] = ""  # the dataset's name in messages
    torchvision_class: ClassVar[Any] = None  # the torchvision.datasets class
    mean: ClassVar[tuple[float, ...] | None] = None  # None: the training split's own statistics
    std: ClassVar[tuple[float, ...] | None] = None
    default_input_shape: ClassVar[tuple[int, ...]] = ()  # the dataset's sample shape
    default_num_classes: ClassVar[int] = 0
    _repr_fields: tuple[str, ...] = ("root", "download", "check_integrity", "normalize")

    def __init__(
        self,
        *,
        num_clients: int,
        root: str | os.PathLike = "data",
        download: bool = False,
        check_integrity: bool = True,
        normalize: bool = True,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        partition: Partition | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_clients=num_clients,
            input_shape=self.default_input_shape if input_shape is None else input_shape,
            num_classes=self.default_num_classes if num_classes is None else num_classes,
            partition=partition,
            seed=seed,
        )
        with checking() as check:
            check(isinstance(root, (str, os.PathLike)) and str(root) != "", "root", root, "a non-empty directory path")
            check(isinstance(download, bool), "download", download, "true or false")
            check(isinstance(check_integrity, bool), "check_integrity", check_integrity, "true or false")
            check(isinstance(normalize, bool), "normalize", normalize, "true or false")
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.download = download
        self.check_integrity = check_integrity
        self.normalize = normalize

    # --- what a subclass writes -------------------------------------------------------

    def _open(self, train: bool) -> Any:
        """The torchvision dataset of one split, read from :attr:`root`."""
        return self.torchvision_class(self.root, train=train, download=self.download)

    @abc.abstractmethod
    def _expected_files(self) -> tuple[str, list[str]]:
        """The directory torchvision reads and the names of the files it needs there."""

    @abc.abstractmethod
    def _arrays(self, dataset: Any) -> tuple[Tensor, Tensor]:
        """The split's images as a uint8 tensor ``(N, C, H, W)`` and its labels as int64 ``(N,)``."""

    # --- the shared part ---------------------------------------------------------------

    def load(self) -> tuple[TensorDataset, TensorDataset, None]:
        """Both splits through torchvision, as float32 features and int64 labels; no groups."""
        train_x, train_y = self._arrays(self._read(train=True))
        test_x, test_y = self._arrays(self._read(train=False))
        mean, std = self._statistics(train_x) if self.normalize else (None, None)
        train_x, test_x = _to_float(train_x), _to_float(test_x)
        if mean is not None and std is not None:
            for x in (train_x, test_x):
                x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        return TensorDataset(train_x, train_y.to(torch.int64)), TensorDataset(test_x, test_y.to(torch.int64)), None

    def _statistics(self, train_images: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel (mean, std) of the [0, 1] pixels: the class's constants, or the training split's own."""
        if self.mean is not None and self.std is not None:
            return torch.tensor(self.mean, dtype=torch.float32), torch.tensor(self.std, dtype=torch.float32)
        return pixel_statistics(train_images)

    def _read(self, train: bool) -> Any:
        try:
            return self._open(train)
        except Exception as error:  # torchvision: RuntimeError, URLError/OSError, parse errors of bad files
            raise ConfigError([self._problem(error)]) from error

    def _problem(self, error: BaseException) -> str:
        """One line: what is wrong with the dataset's files, where they belong, and how to get them."""
        directory, files = self._expected_files()
        missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        expected = f"expected {', '.join(files)} in {directory}"
        how = "or copy the files there"
        if missing and self.download:
            return (
                f"data.download: could not download {self.name} ({_one_line(error)}); {expected}; "
                f"run with data.download=true where there is internet, {how}"
            )
        if missing:
            return (
                f"data.root: {self.name} files not found: {expected} ({len(missing)} of {len(files)} missing); "
                f"set data.download=true to download them (needs internet), {how}"
            )
        skip = "" if not self.check_integrity else ", or set data.check_integrity=false for files you prepared yourself"
        return (
            f"data.root: {self.name} files are unreadable or fail torchvision's checksum ({_one_line(error)}); "
            f"{expected}; set data.download=true to download them again (needs internet), copy intact files there{skip}"
        )


def _to_float(x: Tensor) -> Tensor:
    """uint8 images to contiguous float32 in [0, 1]."""
    return x.contiguous().to(torch.float32).div_(255.0)
