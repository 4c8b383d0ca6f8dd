"""Dataset loading: IDX parsing, fashion-mnist, CIFAR layout, image folders, synthetic data."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archsearch.errors import ArchsearchError, DataError
from archsearch.train import data as data_mod
from archsearch.train.data import FASHION_MNIST_DIR, ImageData, load_dataset, read_idx


def _write_idx(path: Path, array: np.ndarray, *, magic_type: int = 0x08) -> Path:
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def _write_fmnist(root: Path, n: int = 40, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Tiny IDX pair; every image is unique (its index is written into the first two pixels)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    labels = (np.arange(n) % 10).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", images)
    _write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    return images, labels


def _ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).tolist())


# --------------------------------------------------------------------------- IDX
def test_read_idx_roundtrip(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(_write_idx(tmp_path / "a-idx3-ubyte.gz", arr))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4) + b"\x00" * 5, id="short"),
        pytest.param(bytes([1, 2, 8, 3]) + struct.pack(">3I", 1, 1, 1) + b"\x00", id="magic"),
        pytest.param(bytes([0, 0, 8, 3, 0, 0]), id="header"),
        pytest.param(b"", id="empty"),
    ],
)
def test_read_idx_malformed(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(payload)
    with pytest.raises(DataError, match="bad-idx3-ubyte.gz"):
        read_idx(path)


def test_read_idx_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "junk-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="junk-idx1-ubyte.gz"):
        read_idx(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = _write_idx(tmp_path / "t-idx3-ubyte.gz", np.zeros((50, 8, 8), np.uint8))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="t-idx3-ubyte.gz"):
        read_idx(path)


# --------------------------------------------------------------------------- fashion-mnist layout
def test_fashion_mnist_from_tiny_idx(tmp_path: Path) -> None:
    images, labels = _write_fmnist(tmp_path, n=40)
    d = load_dataset("fashion-mnist", data_dir=tmp_path, val_fraction=0.25, split_seed=3)
    assert isinstance(d, ImageData) and d.name == "fashion-mnist"
    assert d.train_x.shape == (30, 1, 8, 8) and d.val_x.shape == (10, 1, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert (d.num_classes, d.in_chans, d.img_size, len(d)) == (10, 1, 8, 30)
    assert d.class_names is not None and len(d.class_names) == 10
    train_ids, val_ids = _ids(d.train_x), _ids(d.val_x)
    assert not train_ids & val_ids and len(train_ids | val_ids) == 40
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y)):  # labels travel with images
        idx = (x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).numpy()
        np.testing.assert_array_equal(y.numpy(), labels[idx])
    flat = d.train_x.double() / 255
    assert d.mean[0] == pytest.approx(float(flat.mean()), abs=1e-9)
    assert d.std[0] == pytest.approx(float(flat.std(unbiased=False)), abs=1e-9)
    x0, y0 = d[0]
    assert x0.shape == (1, 8, 8) and int(y0) == int(d.train_y[0])


def test_split_is_deterministic_and_max_train_is_a_prefix(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, n=60)
    a = load_dataset("fashion-mnist", data_dir=tmp_path, split_seed=1)
    b = load_dataset("fashion-mnist", data_dir=tmp_path, split_seed=1)
    c = load_dataset("fashion-mnist", data_dir=tmp_path, split_seed=2)
    small = load_dataset("fashion-mnist", data_dir=tmp_path, split_seed=1, max_train=7)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_x, b.val_x)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(small.train_x, a.train_x[:7]) and torch.equal(small.val_x, a.val_x)


def test_missing_fashion_mnist_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--data-dir DIR\), found none"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="found train-labels-idx1-ubyte.gz"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_mismatched_label_count(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((10, 4, 4), np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="expected 10 labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []

    def spy(path: str | Path) -> np.ndarray:
        read.append(Path(path).name)
        return read_idx(path)

    monkeypatch.setattr(data_mod, "read_idx", spy)
    d = load_dataset("fashion-mnist", max_train=500)
    assert d.train_x.shape == (500, 1, 28, 28) and d.val_x.shape == (6000, 1, 28, 28)
    assert (d.num_classes, d.in_chans, d.img_size) == (10, 1, 28)
    assert set(d.train_y.tolist()) <= set(range(10)) and len(set(d.val_y.tolist())) == 10
    assert 0.2 < d.mean[0] < 0.4 and 0.25 < d.std[0] < 0.45
    assert sorted(read) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert not any("t10k" in name for name in read)


# --------------------------------------------------------------------------- other datasets
def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(DataError, match="fashion-mnist.*cifar10.*imagefolder:PATH.*'mnist-ish'"):
        load_dataset("mnist-ish")
    with pytest.raises(DataError):
        load_dataset("imagefolder:")  # a path is required


def test_bad_options() -> None:
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("synthetic", val_fraction=1.0)
    with pytest.raises(DataError, match="max_train"):
        load_dataset("synthetic", max_train=0)
    with pytest.raises(DataError, match="'depth=3'"):
        load_dataset("synthetic:depth=3")
    assert issubclass(DataError, ArchsearchError)


def test_cifar_layout(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        batch = {"data": np.full((4, 3072), i, np.uint8), "labels": [0, 1, 2, i]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [*names, "truck"]}))
    d = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)
    assert d.train_x.shape == (16, 3, 32, 32) and d.val_x.shape == (4, 3, 32, 32)
    assert d.num_classes == 10 and d.in_chans == 3 and d.class_names is not None
    assert d.class_names[-1] == "truck"


def test_cifar_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--data-dir DIR.*--download"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", data_dir=tmp_path)


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path)


def test_imagefolder(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "cats" / f"{i}.png", (20 + i, 12), (200, 10, 10))
        _png(tmp_path / "dogs" / f"{i}.png", (9, 15), (10, 10, 200))
    d = load_dataset(f"imagefolder:{tmp_path}", img_size=8, val_fraction=0.34)
    assert d.class_names == ["cats", "dogs"] and d.num_classes == 2
    assert d.in_chans == 3 and d.img_size == 8
    assert d.train_x.shape[1:] == (3, 8, 8) and len(d) + len(d.val_x) == 6
    reds = torch.cat([d.train_x, d.val_x])[torch.cat([d.train_y, d.val_y]) == 0]
    assert (reds[:, 0] > 150).all() and (reds[:, 2] < 50).all()


def test_imagefolder_grayscale_default_size(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(2):
            _png(tmp_path / c / f"{i}.png", (70, 70), (i * 100,) * 3, mode="L")
    d = load_dataset(f"imagefolder:{tmp_path}", val_fraction=0.25)
    assert d.in_chans == 1 and d.img_size == 64 and d.train_x.shape[1:] == (1, 64, 64)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="class folders"):
        load_dataset(f"imagefolder:{tmp_path}")  # no class folders
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="class folders"):
        load_dataset(f"imagefolder:{tmp_path}")  # class folder without images
    bad = tmp_path / "empty_class" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_synthetic_is_deterministic_and_configurable() -> None:
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert a.train_x.shape == (1800, 1, 28, 28) and a.val_x.shape == (200, 1, 28, 28)
    assert a.num_classes == 10 and a.std[0] > 0.05
    c = load_dataset("synthetic:classes=3,chans=3,size=12,n=60,seed=1")
    assert c.train_x.shape == (54, 3, 12, 12) and c.num_classes == 3 and len(c.mean) == 3
    assert not torch.equal(load_dataset("synthetic:seed=1").train_x, a.train_x)
