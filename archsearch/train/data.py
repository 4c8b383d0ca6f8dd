"""Datasets as in-memory uint8 tensors, split into train and validation.

Every loader returns an :class:`ImageData`: ``N x C x H x W`` uint8 images and int64 labels for
a training split and a validation split carved out of the *training* data (the search never
reads a test split), plus per-channel mean/std of the training split on the ``[0, 1]`` scale.
Images stay uint8 until they reach the training device, where they are resized and normalised.

Accepted names (see :func:`load_dataset`):

* ``fashion-mnist`` (default; IDX files from Debian's ``dataset-fashion-mnist`` package),
* ``cifar10`` / ``cifar100`` (torchvision's on-disk layout),
* ``imagefolder:PATH`` (one sub-folder per class),
* ``synthetic[:key=value,...]`` (deterministic, learnable; for tests).
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._logging import get_logger
from ..errors import DataError

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "ImageData",
    "load_dataset",
    "read_idx",
]

log = get_logger("train.data")

#: Names accepted by :func:`load_dataset` (``imagefolder`` and ``synthetic`` take a suffix).
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")
#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_DEFAULT_ROOT = Path("~/.cache/archsearch/datasets")
_FMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_IDX_DTYPES: dict[int, Any] = {8: "u1", 9: "i1", 11: ">i2", 12: ">i4", 13: ">f4", 14: ">f8"}
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class ImageData:
    """An image-classification dataset held in memory.

    Indexing and ``len()`` act on the training split, like a ``TensorDataset``.

    Attributes:
        name: dataset name as given to :func:`load_dataset`.
        train_x: training images, uint8 ``N x C x H x W``.
        train_y: training labels, int64 ``N``.
        val_x: validation images (carved from the training data), uint8.
        val_y: validation labels, int64.
        num_classes: number of classes.
        in_chans: image channels ``C``.
        img_size: native image side ``H`` (= ``W``).
        mean: per-channel mean of the training split on the ``[0, 1]`` scale.
        std: per-channel standard deviation of the training split on the ``[0, 1]`` scale.
        class_names: class names, when known.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.train_x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_x[index], self.train_y[index]


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_train: int | None = None,
    img_size: int | None = None,
) -> ImageData:
    """Load a dataset's training data and split it into train and validation.

    The split is a permutation of the training data seeded by ``split_seed``: the first
    ``val_fraction`` of it is the validation split and the rest (in permuted order, so any prefix
    is a random sample) the training split, cut to ``max_train`` images if given.

    Args:
        name: ``fashion-mnist``, ``cifar10``, ``cifar100``, ``imagefolder:PATH`` or
            ``synthetic[:classes=10,chans=1,size=28,n=2000,seed=0]``.
        data_dir: where the files are; fashion-mnist defaults to :data:`FASHION_MNIST_DIR`,
            CIFAR to ``~/.cache/archsearch/datasets``.
        download: let torchvision download CIFAR when it is missing.
        val_fraction: share of the training data held out for validation, in ``(0, 1)``.
        split_seed: seed of the train/validation permutation.
        max_train: keep at most this many training images.
        img_size: side images are resized to (``imagefolder`` only; default 64).

    Returns:
        The dataset, as uint8 tensors.

    Raises:
        DataError: the name is unknown, files are missing or malformed, or an option is invalid.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    if max_train is not None and max_train < 1:
        raise DataError(f"max_train: expected a positive integer or None, got {max_train!r}")
    kind, _, arg = name.partition(":")
    class_names: list[str] | None = None
    if name == "fashion-mnist":
        x, y = _load_fashion_mnist(Path(data_dir) if data_dir else FASHION_MNIST_DIR)
        class_names = list(_FMNIST_CLASSES)
    elif name in ("cifar10", "cifar100"):
        root = Path(data_dir) if data_dir else _DEFAULT_ROOT
        x, y, class_names = _load_cifar(name, root.expanduser(), download)
    elif kind == "imagefolder" and arg:
        x, y, class_names = _load_imagefolder(Path(arg).expanduser(), img_size or 64)
    elif kind == "synthetic":
        x, y = _synthetic(name, arg)
    else:
        raise DataError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{name}: expected labels >= 0, got label {int(y.min())}")
    num_classes = len(class_names) if class_names else int(y.max()) + 1
    if len(y) and int(y.max()) >= num_classes:
        raise DataError(
            f"{name}: expected labels below its {num_classes} classes, got label {int(y.max())}"
        )
    data = _split(name, x, y, num_classes, val_fraction, split_seed, max_train, class_names)
    log.info(
        "%s: %d train + %d val images, %dx%dx%d, %d classes",
        name,
        len(data),
        data.val_x.shape[0],
        data.in_chans,
        data.img_size,
        data.img_size,
        num_classes,
    )
    return data


# --------------------------------------------------------------------------- splitting, stats
def _split(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    val_fraction: float,
    split_seed: int,
    max_train: int | None,
    class_names: list[str] | None,
) -> ImageData:
    n = int(x.shape[0])
    n_val = round(n * val_fraction)
    if n_val < 1 or n_val >= n:
        raise DataError(
            f"{name}: expected enough images for a {val_fraction:g} validation split, got {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if max_train is not None:
        train_idx = train_idx[:max_train]
    train_x = x[train_idx].contiguous()
    mean, std = _channel_stats(train_x)
    return ImageData(
        name=name,
        train_x=train_x,
        train_y=y[train_idx].contiguous(),
        val_x=x[val_idx].contiguous(),
        val_y=y[val_idx].contiguous(),
        num_classes=num_classes,
        in_chans=int(x.shape[1]),
        img_size=int(x.shape[2]),
        mean=mean,
        std=std,
        class_names=class_names,
    )


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std on the [0, 1] scale, from 256-bin histograms."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = float((hist * levels).sum() / total)
        var = float((hist * (levels - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- IDX (fashion-mnist)
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when its name ends in ``.gz``).

    Raises:
        DataError: the file is unreadable, truncated or has a bad magic number.
    """
    p = Path(path)
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{p}: expected a readable IDX file, got {type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{p}: expected an IDX magic number, got {raw[:4].hex() or 'nothing'}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: expected a {header}-byte IDX header, got {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{p}: expected {expected} bytes for shape {shape}, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for d in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def _load_fashion_mnist(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    found = [_find_idx(root, s) for s in stems]
    if None in found:
        have = ", ".join(p.name for p in found if p) or "none"
        raise DataError(
            f"fashion-mnist: expected IDX files in {root} (install Debian's dataset-fashion-mnist,"
            f" or pass --data-dir DIR), found {have}"
        )
    img_path, lbl_path = found
    assert img_path is not None and lbl_path is not None
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{img_path}: expected uint8 images N x H x W, got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{lbl_path}: expected {images.shape[0]} labels, got {labels.shape}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------- CIFAR
def _load_cifar(
    name: str, root: Path, download: bool
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        meta, label_key, names_key = folder / "batches.meta", "labels", "label_names"
    else:
        folder = root / "cifar-100-python"
        files = [folder / "train"]
        meta, label_key, names_key = folder / "meta", "fine_labels", "fine_label_names"
    if download and not all(f.is_file() for f in [*files, meta]):
        _download_cifar(name, root)
    missing = [f.name for f in [*files, meta] if not f.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(
            f"{name}: expected torchvision's {folder.name}/ in {root} (pass --data-dir DIR,"
            f" or --download), missing {missing[0]}{more}"
        )
    xs, ys = [], []
    for f in files:
        entry = _unpickle(f)
        try:
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        except (KeyError, ValueError) as e:
            raise DataError(f"{f}: expected a CIFAR batch, got {type(e).__name__}: {e}") from None
    names = [str(s) for s in _unpickle(meta).get(names_key, [])]
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{folder}: expected as many labels as images, got {y.shape[0]}")
    return x, y, names


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise DataError(f"{path}: expected a CIFAR pickle, got {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a CIFAR pickle dict, got {type(obj).__name__}")
    return obj


def _download_cifar(name: str, root: Path) -> None:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    log.info("%s: downloading to %s", name, root)
    try:
        cls(root=str(root), train=True, download=True)
    except Exception as e:  # network, disk or checksum failures
        msg = str(e).replace("\n", " ")
        raise DataError(f"{name}: expected a successful download to {root}, got {msg}") from None


# --------------------------------------------------------------------------- image folders
def _load_imagefolder(root: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torchvision.datasets import ImageFolder

    if size < 1:
        raise DataError(f"imagefolder: expected a positive img_size, got {size}")
    if not root.is_dir():
        raise DataError(f"imagefolder: expected a directory of class folders, got {str(root)!r}")
    try:
        folder = ImageFolder(str(root))
    except OSError as e:  # ImageFolder raises FileNotFoundError for both cases
        msg = str(e).split(". ")[0].replace("\n", " ")
        raise DataError(
            f"imagefolder: expected class folders with images in {root}, got: {msg}"
        ) from None
    x = torch.empty((len(folder.samples), 3, size, size), dtype=torch.uint8)
    gray = True
    for i, (path, _) in enumerate(folder.samples):
        try:
            with Image.open(path) as img:
                gray = gray and img.mode in _GRAY_MODES
                arr = np.asarray(_square(img.convert("RGB"), size))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: expected a readable image, got {e}") from None
        x[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    if gray:
        x = x[:, :1].contiguous()
    y = torch.tensor([t for _, t in folder.samples], dtype=torch.int64)
    return x, y, list(folder.classes)


def _square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear) and centre-crop to a square."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


# --------------------------------------------------------------------------- synthetic
_SYNTH_DEFAULTS = {"classes": 10, "chans": 1, "size": 28, "n": 2000, "seed": 0}


def _synthetic(name: str, arg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: a smooth spatial layout plus an oriented grating (random phase per image),
    with random contrast and pixel noise, so both spatial and pooled models can learn it."""
    opts = dict(_SYNTH_DEFAULTS)
    for item in filter(None, arg.split(",")):
        key, _, value = item.partition("=")
        digits = value.lstrip("-")
        if key not in opts or not digits.isdecimal() or len(digits) > 20:
            raise DataError(
                f"{name}: expected options like classes=10,chans=1,size=28,n=2000,seed=0,"
                f" got {item!r}"
            )
        opts[key] = int(value)
    k, c, s, n = opts["classes"], opts["chans"], opts["size"], opts["n"]
    if not -(2**63) <= opts["seed"] < 2**64:
        raise DataError(f"{name}: expected a seed in [-2**63, 2**64), got {opts['seed']}")
    if k < 2 or c < 1 or s < 4 or n < 2 * k:
        raise DataError(f"{name}: expected classes>=2, chans>=1, size>=4, n>=2*classes, got {opts}")
    g = torch.Generator().manual_seed(opts["seed"])
    coarse = torch.randn(k, c, 4, 4, generator=g)
    layouts = torch.nn.functional.interpolate(coarse, size=(s, s), mode="bilinear")
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=g)]
    angle = math.pi * torch.arange(k, dtype=torch.float32) / k
    freq = 2 * math.pi * (0.07 + 0.06 * (torch.arange(k) % 2))  # radians per pixel
    phase = 2 * math.pi * torch.rand(n, generator=g)
    pos = torch.arange(s, dtype=torch.float32)
    proj = (
        angle.cos()[y, None, None] * pos[None, None, :]
        + angle.sin()[y, None, None] * pos[None, :, None]
    )
    grating = torch.sin(freq[y, None, None] * proj + phase[:, None, None]).unsqueeze(1)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
    x = (0.8 * layouts[y] + 0.8 * grating) * contrast + 0.5 * torch.randn(n, c, s, s, generator=g)
    x = (128 + 45 * x).round().clamp(0, 255).to(torch.uint8)
    return x, y.to(torch.int64)
