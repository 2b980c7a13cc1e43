"""Dataset loaders: the bundled digits, npz files (good and broken), image folders, the registry."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinyset.config import DataConfig
from tinyset.data import DATASETS, Dataset, describe_datasets, load_dataset
from tinyset.errors import TinysetError


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _rgb_npz(path: Path, n_train: int = 40, n_test: int = 12, classes: int = 4, **extra) -> Path:
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(n_train) % classes,
        x_test=rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(n_test) % classes,
    )
    arrays.update(extra)
    return _write_npz(path, **arrays)


def _error(spec: str, cfg: DataConfig | None = None) -> str:
    with pytest.raises(TinysetError) as exc:
        load_dataset(spec, cfg)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_split():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert len(ds.train) + len(ds.test) == 1797
    assert ds.info.num_classes == 10 and ds.info.class_names == tuple(str(i) for i in range(10))
    assert ds.info.shape == (1, 16, 16) and ds.info.kind == "image" and ds.info.image_size == 16
    x, y = ds.train.get_batch(range(64))
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert y.dtype == torch.long
    assert 0.1 < ds.info.mean[0] < 0.6 and 0.1 < ds.info.std[0] < 0.6
    # stratified: every class is in both splits, roughly 80/20
    assert torch.bincount(ds.test.targets, minlength=10).min() >= 30
    assert 0.18 < len(ds.test) / 1797 < 0.22
    # deterministic split
    again = load_dataset("digits")
    assert torch.equal(again.test.targets, ds.test.targets) and torch.equal(again.test.x, ds.test.x)


def test_digits_class_indices():
    ds = load_dataset("digits")
    total = 0
    for c in range(10):
        idx = ds.train.class_indices(c)
        assert len(idx) > 100 and bool((ds.train.targets[idx] == c).all())
        total += len(idx)
    assert total == len(ds.train)


def test_unknown_class_name_errors():
    info = load_dataset("digits").info
    assert info.class_index("3") == 3 and info.class_index(7) == 7
    with pytest.raises(TinysetError, match="unknown class 'cat'"):
        info.class_index("cat")
    with pytest.raises(TinysetError, match="out of range"):
        info.class_index(10)


# ---------------------------------------------------------------- registry


def test_unknown_dataset_lists_known():
    msg = _error("imagenet-1k")
    assert "unknown dataset 'imagenet-1k'" in msg
    for name in ("digits", "mnist", "cifar10", "cifar100", "npz:<path>", "imagefolder:<root>"):
        assert name in msg


def test_describe_datasets_lists_every_form():
    names = [n for n, _ in describe_datasets()]
    assert {"digits", "mnist", "cifar10", "cifar100", "npz:<path>", "imagefolder:<root>"} <= set(names)
    assert all(doc for _, doc in describe_datasets())
    assert "digits" in DATASETS


def test_named_dataset_without_root_names_file(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYSET_DATA", raising=False)
    msg = _error("mnist", DataConfig(dataset="mnist"))
    assert "mnist.npz" in msg and "--data-root" in msg and "TINYSET_DATA" in msg
    msg = _error("cifar10", DataConfig(data_root=str(tmp_path)))
    assert str(tmp_path / "cifar10.npz") in msg and "--download" in msg


def test_named_dataset_resolves_npz_under_root(monkeypatch, tmp_path):
    _rgb_npz(tmp_path / "cifar10.npz", class_names=np.array([f"c{i}" for i in range(4)]))
    monkeypatch.setenv("TINYSET_DATA", str(tmp_path))
    ds = load_dataset("cifar10")
    assert ds.info.name == "cifar10" and ds.info.class_names[0] == "c0" and len(ds.train) == 40


# ---------------------------------------------------------------- npz


def test_npz_rgb_round_trip(tmp_path):
    names = np.array(["ant", "bee", "cat", "dog", "eel"])
    path = _rgb_npz(tmp_path / "rgb.npz", class_names=names)
    raw = np.load(path)
    ds = load_dataset(f"npz:{path}")
    assert ds.info.name == f"npz:{path}"
    assert ds.info.shape == (3, 8, 8) and ds.info.num_classes == 5  # from class_names, not max label
    assert ds.info.class_names == ("ant", "bee", "cat", "dog", "eel") and ds.info.class_index("cat") == 2
    x, y = ds.train.get_batch([0, 5])
    expected = torch.from_numpy(raw["x_train"][[0, 5]]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(x, expected) and y.tolist() == [0, 1]
    assert len(ds.test) == 12
    for m, s in zip(ds.info.mean, ds.info.std):
        assert 0.4 < m < 0.6 and 0.2 < s < 0.35  # uniform 0..255: mean 0.5, std ~0.29


def test_npz_grayscale_and_default_class_names(tmp_path):
    rng = np.random.default_rng(1)
    path = _write_npz(
        tmp_path / "gray.npz",
        x_train=rng.integers(0, 256, (30, 5, 7), dtype=np.uint8),
        y_train=np.arange(30) % 3,
        x_test=rng.integers(0, 256, (6, 5, 7), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )
    ds = load_dataset(f"npz:{path}")
    assert ds.info.shape == (1, 5, 7) and ds.info.channels == 1
    assert ds.info.num_classes == 3 and ds.info.class_names == ("0", "1", "2")
    assert len(ds.info.mean) == 1


def test_npz_vector_and_unlabelled(tmp_path):
    rng = np.random.default_rng(2)
    path = _write_npz(tmp_path / "vec.npz", x_train=rng.normal(size=(20, 6)).astype(np.float32), y_train=np.arange(20) % 2)
    ds = load_dataset(f"npz:{path}")
    assert ds.info.kind == "vector" and ds.info.shape == (6,) and ds.test is None and ds.info.num_classes == 2
    assert ds.train.get_batch([0, 1])[0].shape == (2, 6)

    path = _write_npz(tmp_path / "unl.npz", x_train=rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8))
    ds = load_dataset(f"npz:{path}")
    assert ds.train.targets is None and ds.train.get_batch([1])[1] is None
    with pytest.raises(TinysetError, match="unlabelled"):
        ds.train.class_indices(0)


def test_npz_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    msg = _error(f"npz:{path}")
    assert str(path) in msg and "not found" in msg


def test_npz_truncated_file(tmp_path):
    path = _rgb_npz(tmp_path / "cut.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _error(f"npz:{path}")
    assert str(path) in msg and "not a valid .npz" in msg


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    assert str(path) in _error(f"npz:{path}")


def test_npz_missing_x_train(tmp_path):
    path = _write_npz(tmp_path / "nox.npz", y_train=np.arange(3))
    msg = _error(f"npz:{path}")
    assert str(path) in msg and "no x_train" in msg


@pytest.mark.parametrize(
    "x, problem",
    [
        (np.zeros((4, 8), np.uint8), "has shape (4, 8)"),
        (np.zeros((4, 8, 8, 2), np.uint8), "channels last"),
        (np.zeros((4, 3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((4, 8, 8, 3), np.float32), "must be uint8"),
    ],
)
def test_npz_wrong_shape(tmp_path, x, problem):
    path = _write_npz(tmp_path / "shape.npz", x_train=x, y_train=np.zeros(4, np.int64))
    msg = _error(f"npz:{path}")
    assert str(path) in msg and problem in msg


def test_npz_length_mismatch(tmp_path):
    path = _write_npz(tmp_path / "len.npz", x_train=np.zeros((5, 4, 4), np.uint8), y_train=np.zeros(4, np.int64))
    msg = _error(f"npz:{path}")
    assert str(path) in msg and "5 samples but y_train has 4 labels" in msg


def test_npz_test_shape_mismatch(tmp_path):
    path = _rgb_npz(tmp_path / "tshape.npz", x_test=np.zeros((12, 9, 9, 3), np.uint8))
    msg = _error(f"npz:{path}")
    assert str(path) in msg and "x_test" in msg


@pytest.mark.parametrize(
    "extra, problem",
    [
        (dict(y_train=np.full(40, -1)), "negative label -1"),
        (dict(class_names=np.array(["a", "b"])), "holds label 3 but class_names has only 2"),
        (dict(y_test=np.full(12, 9), class_names=np.array(list("abcd"))), "y_test holds label 9"),
        (dict(y_train=np.zeros(40, np.float32)), "labels must be integers"),
    ],
)
def test_npz_bad_labels(tmp_path, extra, problem):
    path = _rgb_npz(tmp_path / "labels.npz", **extra)
    msg = _error(f"npz:{path}")
    assert str(path) in msg and problem in msg


def test_npz_nan_vectors(tmp_path):
    x = np.ones((6, 3), np.float32)
    x[2, 1] = np.nan
    path = _write_npz(tmp_path / "nan.npz", x_train=x, y_train=np.zeros(6, np.int64))
    msg = _error(f"npz:{path}")
    assert str(path) in msg and "NaN" in msg


# ---------------------------------------------------------------- imagefolder


def _image_tree(root: Path, classes=("cat", "dog", "eel"), per_class: int = 3, val_classes=("cat", "dog")) -> Path:
    rng = np.random.default_rng(3)
    for split, names in (("train", classes), ("val", val_classes)):
        for c in names:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class if split == "train" else 1):
                h, w = (int(v) for v in rng.integers(10, 40, 2))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")
    # a grayscale jpeg: converted to RGB
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(root / "train" / classes[0] / "gray.jpg")
    return root


def test_imagefolder_loads(tmp_path):
    root = _image_tree(tmp_path / "tree")
    ds = load_dataset(f"imagefolder:{root}", DataConfig(image_size=16))
    assert ds.info.class_names == ("cat", "dog", "eel") and ds.info.num_classes == 3
    assert ds.info.shape == (3, 16, 16) and ds.info.name == f"imagefolder:{root}"
    assert len(ds.train) == 10 and len(ds.test) == 2
    x, y = ds.train.get_batch(list(range(len(ds.train))))
    assert x.shape == (10, 3, 16, 16) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.bincount(y).tolist() == [4, 3, 3]
    assert ds.test.targets.tolist() == [0, 1]
    assert all(0.3 < m < 0.7 for m in ds.info.mean)
    assert ds.train.class_indices(2).tolist() == [7, 8, 9]


def test_imagefolder_default_size_and_crop(tmp_path):
    root = tmp_path / "wide"
    (root / "train" / "a").mkdir(parents=True)
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255  # a white centre square: the centre crop keeps exactly it
    Image.fromarray(img).save(root / "train" / "a" / "x.png")
    ds = load_dataset(f"imagefolder:{root}", DataConfig(image_size=20))
    x, _ = ds.train.get_batch([0])
    assert x.shape == (1, 3, 20, 20) and float(x.min()) > 0.99 and ds.test is None
    assert load_dataset(f"imagefolder:{root}").info.shape == (3, 224, 224)


def test_imagefolder_corrupt_image(tmp_path):
    root = _image_tree(tmp_path / "tree")
    bad = root / "train" / "dog" / "broken.png"
    good = (root / "train" / "dog" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(TinysetError) as exc:
        ds = load_dataset(f"imagefolder:{root}", DataConfig(image_size=8))
        ds.train.get_batch(list(range(len(ds.train))))
    assert str(bad) in str(exc.value) and "cannot read image" in str(exc.value)


def test_imagefolder_bad_layouts(tmp_path):
    assert "not found" in _error(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    msg = _error(f"imagefolder:{tmp_path / 'empty'}")
    assert str(tmp_path / "empty" / "train") in msg
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    assert "no class subfolders" in _error(f"imagefolder:{tmp_path / 'noclass'}")
    (tmp_path / "hollow" / "train" / "a").mkdir(parents=True)
    assert "holds no images" in _error(f"imagefolder:{tmp_path / 'hollow'}")
    root = _image_tree(tmp_path / "extra", val_classes=("cat", "zebra"))
    msg = _error(f"imagefolder:{root}", DataConfig(image_size=8))
    assert str(root / "val" / "zebra") in msg and "not among the train classes" in msg


# ---------------------------------------------------------------- real shared data (optional)


def test_real_cifar10_npz():
    root = os.environ.get("TINYSET_DATA")
    if not root:
        pytest.skip("TINYSET_DATA not set: point it at a folder holding cifar10.npz to run this check")
    if not (Path(root) / "cifar10.npz").is_file():
        pytest.skip(f"TINYSET_DATA={root} has no cifar10.npz")
    ds = load_dataset("cifar10", DataConfig(data_root=root))
    assert len(ds.train) == 50000 and len(ds.test) == 10000
    assert ds.info.shape == (3, 32, 32) and ds.info.num_classes == 10
    assert ds.info.class_names[:2] == ("airplane", "automobile")
    assert torch.bincount(ds.test.targets).tolist() == [1000] * 10


def test_torchvision_folder_missing_or_corrupt(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYSET_DATA", raising=False)
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but empty: torchvision's integrity check fails
    msg = _error("cifar10", DataConfig(data_root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in msg and "--download" in msg and "cifar10.npz" in msg
    assert "--data-root" in _error("cifar100", DataConfig(download=True))  # never downloads to a guessed place
