"""What every dataset gives the pipeline: its description (``DatasetInfo``) and splits that hand out
batches by index. Images are float tensors in [0, 1], NCHW; normalisation lives in the model
(``models.NormalizedModel``), so synthetic pixels are clamped to [0, 1] and export to PNG exactly."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import TinysetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset. ``shape`` is (C, H, W) for images and (D,) for vectors."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "image"  # "image" | "vector"
    source: str = ""  # file or folder it came from, for the manifest
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def identity(self) -> str:
        """The name with the path in it resolved (``imagefolder:<root>``, ``npz:<path>``): ``../data/x`` and
        ``/work/data/x`` are one dataset, so a path's spelling neither retrains a cached teacher nor makes a
        run's own dataset look foreign. Names without a path (``cifar10``) are their own identity."""
        return dataset_identity(self.name, self.source)

    @property
    def channels(self) -> int:
        return self.shape[0] if self.kind == "image" else 1

    @property
    def image_size(self) -> int:
        if self.kind != "image":
            raise TinysetError(f"dataset {self.name!r} holds vectors, not images")
        return self.shape[-1]

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by name or index; unknown classes get a one-line error."""
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            idx = int(name_or_index)
            if not 0 <= idx < self.num_classes:
                raise TinysetError(f"class index {idx} is out of range for {self.name} ({self.num_classes} classes)")
            return idx
        try:
            return self.class_names.index(str(name_or_index))
        except ValueError:
            raise TinysetError(f"unknown class {name_or_index!r} for {self.name}; classes: {', '.join(self.class_names)}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_to_idx"] = {n: i for i, n in enumerate(self.class_names)}
        return d


def dataset_identity(name: str, source: str = "") -> str:
    """``DatasetInfo.identity`` from a name and source as recorded (a manifest's ``dataset`` and
    ``dataset_info.source``), so a run's recorded dataset compares with one loaded under another path spelling."""
    prefix, sep, _ = name.partition(":")
    return f"{prefix}:{Path(source).resolve()}" if sep and source else name


def recorded_identity(manifest: dict) -> str:
    """The identity of the dataset a run's manifest records."""
    return dataset_identity(manifest.get("dataset") or "", (manifest.get("dataset_info") or {}).get("source") or "")


class Split(torch.utils.data.Dataset):
    """One split (train or test). Subclasses implement ``_load(indices)``; everything else is shared.

    ``__getitem__`` takes a *list* of indices and returns a whole batch, so a ``DataLoader`` driven by
    a ``BatchSampler`` (``batch_size=None``) moves batches, not single images (cheap for in-memory
    data, parallel for image files)."""

    targets: torch.Tensor | None  # LongTensor [N] or None for unlabelled data

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, indices: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self._load(idx)
        y = self.targets[idx] if self.targets is not None else None
        return x, y

    def __getitem__(self, indices):
        return self.get_batch(indices)

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices of every sample of class ``c`` (class-conditional sampling)."""
        if self.targets is None:
            raise TinysetError("this split is unlabelled; class-conditional sampling needs labels")
        if not hasattr(self, "_by_class"):
            order = torch.argsort(self.targets, stable=True)
            counts = torch.bincount(self.targets, minlength=int(self.targets.max()) + 1 if len(self.targets) else 0)
            self._by_class = list(torch.split(order, counts.tolist()))
        if not 0 <= c < len(self._by_class):
            raise TinysetError(f"class {c} has no samples in this split")
        return self._by_class[c]


class TensorSplit(Split):
    """An in-memory split: uint8 images (converted to [0, 1] on access) or float vectors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None):
        if y is not None and len(x) != len(y):
            raise TinysetError(f"{len(x)} samples but {len(y)} labels")
        self.x = x
        self.targets = y

    def __len__(self) -> int:
        return len(self.x)

    def _load(self, indices: torch.Tensor) -> torch.Tensor:
        x = self.x[indices]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass
class Dataset:
    """A loaded dataset: its info and its train/test splits (test may be None for unlabelled sets)."""

    info: DatasetInfo
    train: Split
    test: Split | None


def channel_stats(split: Split, max_samples: int = 10000, batch: int = 1000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of a split's [0, 1] images (taken from the data, never hard-coded).
    Uses at most ``max_samples`` evenly spaced samples so large folders stay cheap."""
    n = len(split)
    idx = torch.linspace(0, n - 1, min(n, max_samples)).long()
    s = s2 = None
    count = 0
    for chunk in idx.split(batch):
        x, _ = split.get_batch(chunk)
        x = x.double().flatten(2) if x.dim() == 4 else x.double().unsqueeze(1)
        cs, cs2 = x.sum(dim=(0, 2)), (x * x).sum(dim=(0, 2))
        s = cs if s is None else s + cs
        s2 = cs2 if s2 is None else s2 + cs2
        count += x.shape[0] * x.shape[2]
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def sample_class_indices(ds: Dataset, c: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` distinct training indices of class ``c`` (with replacement only if the class is smaller)."""
    pool = ds.train.class_indices(c)
    if len(pool) == 0:
        raise TinysetError(f"class {c} has no training images")
    if n <= len(pool):
        return pool[torch.randperm(len(pool), generator=g)[:n]]
    log.warning("class %d has %d images, fewer than %d requested: sampling with replacement", c, len(pool), n)
    return pool[torch.randint(len(pool), (n,), generator=g)]
