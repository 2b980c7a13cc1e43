"""Datasets stored as one NumPy ``.npz`` file: ``npz:<path>`` and the named ``mnist`` (``<root>/mnist.npz``).

Layout (the project's shared data folder uses it too)::

    x_train      uint8 (N, H, W) grayscale, (N, H, W, 1) or (N, H, W, 3) HWC RGB
                 -- or float (N, D): a vector dataset (kind "vector")
    y_train      integer (N,)           optional: without it the set is unlabelled (targets None)
    x_test       same per-sample shape  optional
    y_test       integer                required when x_test is given and the train split is labelled
    class_names  str (C,)               optional; default "0".."C-1", C = max(label) + 1

Why this format: it loads with ``numpy.load(allow_pickle=False)`` (no code execution from a data
file), any tool can write it, and a whole split becomes one uint8 tensor, so batches are a slice.
Every defect is reported as a one-line ``TinysetError`` naming the file and the problem, because a
bad array would otherwise surface much later as a shape error deep inside a model.

Vector datasets get one scalar mean/std (``channel_stats`` treats the features as one channel):
enough for the model's normalisation layer and keeps the rule simple."""
from __future__ import annotations

import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import TinysetError
from .base import Dataset, DatasetInfo, TensorSplit, channel_stats
from .registry import data_root, register_dataset

log = logging.getLogger(__name__)

KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")  # other arrays (e.g. filenames) are not read
_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, KeyError)


def _read(path: Path) -> dict[str, np.ndarray]:
    """The layout's arrays from ``path``; a missing, truncated or non-npz file is a one-line error."""
    if not path.is_file():
        raise TinysetError(f"dataset file {path} not found")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise TinysetError(f"{path} is a single .npy array, not an .npz archive with x_train, y_train, ...")
        with z:
            return {k: z[k] for k in KEYS if k in z.files}
    except TinysetError:
        raise
    except _READ_ERRORS as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TinysetError(f"{path} is not a valid .npz file (truncated or corrupt?): {detail}") from None


def _images(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """uint8 (N,H,W[,C]) HWC -> uint8 NCHW tensor (one copy, done once per load)."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise TinysetError(f"{path}: {key} has shape {x.shape}; images need (N, H, W) or (N, H, W, C), vectors a float (N, D)")
    if x.shape[-1] not in (1, 3):
        raise TinysetError(
            f"{path}: {key} has shape {x.shape}; expected channels last (N, H, W, 1 or 3)"
            + (" (channels-first? transpose to NHWC)" if x.shape[1] in (1, 3) else "")
        )
    if x.dtype != np.uint8:
        raise TinysetError(f"{path}: {key} has dtype {x.dtype}; images must be uint8 0..255 (float data must be (N, D) vectors)")
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()


def _vectors(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    if not np.isfinite(x).all():
        raise TinysetError(f"{path}: {key} holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _samples(x: np.ndarray, key: str, path: Path, vector: bool) -> torch.Tensor:
    if len(x) == 0:
        raise TinysetError(f"{path}: {key} is empty")
    if vector:
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            raise TinysetError(f"{path}: {key} has shape {x.shape} dtype {x.dtype}; x_train is a float (N, D) vector set")
        return _vectors(x, key, path)
    return _images(x, key, path)


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> torch.Tensor:
    if y.ndim != 1:
        raise TinysetError(f"{path}: {key} has shape {y.shape}; labels must be 1-D ({n},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise TinysetError(f"{path}: {key} has dtype {y.dtype}; labels must be integers (class indices)")
    if len(y) != n:
        raise TinysetError(f"{path}: x_{key[2:]} has {n} samples but {key} has {len(y)} labels")
    if len(y) and int(y.min()) < 0:
        raise TinysetError(f"{path}: {key} holds negative label {int(y.min())}; labels must be 0..num_classes-1")
    return torch.from_numpy(y.astype(np.int64))


def _class_names(arr: np.ndarray | None, path: Path) -> tuple[str, ...] | None:
    if arr is None:
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "US" or len(arr) == 0:
        raise TinysetError(f"{path}: class_names must be a non-empty 1-D string array, got shape {arr.shape} dtype {arr.dtype}")
    names = tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.tolist())
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise TinysetError(f"{path}: class_names lists {dup!r} twice")
    return names


def load_npz(path: str | Path, name: str | None = None) -> Dataset:
    """Load and validate an ``.npz`` dataset; ``name`` is the DatasetInfo name (default ``npz:<path>``)."""
    path = Path(path).expanduser()
    arrays = _read(path)
    if "x_train" not in arrays:
        raise TinysetError(f"{path} has no x_train array (found: {', '.join(sorted(arrays)) or 'none of ' + ', '.join(KEYS)})")
    xa = arrays["x_train"]
    vector = xa.ndim == 2 and np.issubdtype(xa.dtype, np.floating)
    x_train = _samples(xa, "x_train", path, vector)
    y_train = _labels(arrays["y_train"], "y_train", len(x_train), path) if "y_train" in arrays else None

    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _samples(arrays["x_test"], "x_test", path, vector)
        if tuple(x_test.shape[1:]) != tuple(x_train.shape[1:]):
            raise TinysetError(f"{path}: x_test samples have shape {tuple(x_test.shape[1:])} but x_train {tuple(x_train.shape[1:])}")
        if "y_test" in arrays:
            y_test = _labels(arrays["y_test"], "y_test", len(x_test), path)
        elif y_train is not None:
            raise TinysetError(f"{path} has x_test but no y_test labels")
    elif "y_test" in arrays:
        raise TinysetError(f"{path} has y_test but no x_test")

    names = _class_names(arrays.get("class_names"), path)
    present = [(k, t) for k, t in (("y_train", y_train), ("y_test", y_test)) if t is not None and len(t)]
    top = max((int(t.max()) for _, t in present), default=-1)
    if names is not None:
        for key, t in present:
            if int(t.max()) >= len(names):
                raise TinysetError(f"{path}: {key} holds label {int(t.max())} but class_names has only {len(names)} classes")
    else:
        names = tuple(str(i) for i in range(top + 1))

    train = TensorSplit(x_train, y_train)
    test = TensorSplit(x_test, y_test) if x_test is not None else None
    mean, std = channel_stats(train)
    info = DatasetInfo(
        name=name or f"npz:{path}",
        num_classes=len(names),
        class_names=names,
        shape=tuple(x_train.shape[1:]),
        mean=mean,
        std=std,
        kind="vector" if vector else "image",
        source=str(path.absolute()),
        extra={"format": "npz", "labelled": y_train is not None},
    )
    return Dataset(info=info, train=train, test=test)


def named_npz(name: str, cfg: DataConfig) -> Path | None:
    """``<root>/<name>.npz`` if the data root is set and the file exists, else None."""
    root = data_root(cfg)
    if root is None:
        return None
    path = root / f"{name}.npz"
    return path if path.is_file() else None


def missing_named(name: str, cfg: DataConfig, hint: str = "") -> TinysetError:
    """The one-line error for a named dataset whose file is not where we looked."""
    root = data_root(cfg)
    where = f"{root / (name + '.npz')} not found" if root is not None else f"{name}.npz not found (no data folder set)"
    return TinysetError(f"dataset {name}: {where}; pass --data-root or set TINYSET_DATA to a folder holding {name}.npz{hint}")


@register_dataset("npz:<path>", "an .npz file: x_train uint8 (N,H,W[,3]) or float (N,D), y_train, x_test, y_test, optional class_names")
def build_npz(arg: str | None, cfg: DataConfig) -> Dataset:
    if not arg:
        raise TinysetError("npz: needs a file, e.g. npz:data/my.npz")
    return load_npz(arg)


@register_dataset("mnist", "MNIST 28x28 grayscale, 10 classes, from <data root>/mnist.npz (--data-root or TINYSET_DATA)")
def build_mnist(arg: str | None, cfg: DataConfig) -> Dataset:
    path = named_npz("mnist", cfg)
    if path is None:
        raise missing_named("mnist", cfg)
    return load_npz(path, name="mnist")
