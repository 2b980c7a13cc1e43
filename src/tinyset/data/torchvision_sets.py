"""``cifar10`` / ``cifar100``: from ``<root>/<name>.npz`` if present, else torchvision's own on-disk format.

Why both: the project's shared folder and most users' pipelines can write one ``.npz``, while people
who already used torchvision have ``<root>/cifar-10-batches-py`` lying around. The npz file wins
because it is one validated read. We download only when ``cfg.download`` is True (``--download``):
a run must never reach the network on its own."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import TinysetError
from .base import Dataset, DatasetInfo, TensorSplit, channel_stats
from .npz import load_npz, missing_named, named_npz
from .registry import data_root, register_dataset

log = logging.getLogger(__name__)

# name -> (torchvision class name, folder torchvision creates under root)
_SETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
}


def has_torchvision_data(name: str, root: Path) -> bool:
    return (root / _SETS[name][1]).is_dir()


def load_torchvision(name: str, root: Path, download: bool = False) -> Dataset:
    """Read a CIFAR set in torchvision's format (downloading it first only when asked)."""
    import torchvision.datasets as tvd

    cls_name, folder = _SETS[name]
    cls = getattr(tvd, cls_name)
    try:
        train_set = cls(str(root), train=True, download=download)
        test_set = cls(str(root), train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise TinysetError(
            f"dataset {name}: torchvision data under {root / folder} is missing or corrupt ({str(e).splitlines()[0]}); "
            f"add --download to fetch it, or use the npz form ({name}.npz in --data-root)"
        ) from None
    except Exception as e:  # download failures: URLError, OSError, ...
        raise TinysetError(f"dataset {name}: could not download to {root}: {type(e).__name__}: {e}") from None

    def split(ds) -> TensorSplit:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return TensorSplit(x, torch.as_tensor(ds.targets, dtype=torch.long))

    train, test = split(train_set), split(test_set)
    mean, std = channel_stats(train)
    info = DatasetInfo(
        name=name,
        num_classes=len(train_set.classes),
        class_names=tuple(train_set.classes),
        shape=tuple(train.x.shape[1:]),
        mean=mean,
        std=std,
        kind="image",
        source=str(root / folder),
        extra={"format": "torchvision"},
    )
    return Dataset(info=info, train=train, test=test)


def _builder(name: str):
    def build(arg: str | None, cfg: DataConfig) -> Dataset:
        path = named_npz(name, cfg)
        if path is not None:
            return load_npz(path, name=name)
        root = data_root(cfg)
        if root is not None and (has_torchvision_data(name, root) or cfg.download):
            return load_torchvision(name, root, download=cfg.download)
        if root is None and cfg.download:
            raise TinysetError(f"dataset {name}: --download needs --data-root (or TINYSET_DATA) to say where to put it")
        raise missing_named(name, cfg, hint=f", or torchvision's {_SETS[name][1]} folder (add --download to fetch it)")

    build.__name__ = f"build_{name}"
    return build


register_dataset("cifar10", "CIFAR-10 32x32 RGB, 10 classes: <data root>/cifar10.npz, else torchvision format (--download)")(
    _builder("cifar10")
)
register_dataset("cifar100", "CIFAR-100 32x32 RGB, 100 classes: <data root>/cifar100.npz, else torchvision format (--download)")(
    _builder("cifar100")
)
