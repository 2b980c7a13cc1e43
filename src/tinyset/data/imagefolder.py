"""``imagefolder:<root>``: an ImageNet-style tree of image files, decoded lazily.

Layout::

    <root>/train/<class>/*.{png,jpg,jpeg,bmp,webp}
    <root>/val/<class>/...        (optional; its classes must be a subset of train's)

Class names are the sorted train subfolders (torchvision's ``ImageFolder`` order), so indices agree
with teachers trained on the same tree. Files are read on demand by ``FileSplit`` because a real
folder does not fit in memory; each image is converted to RGB, its shorter side resized to
``cfg.image_size`` (default 224) and centre-cropped to a square (the standard evaluation transform),
so every batch has one shape whatever the files' resolutions.

mean/std come from at most ``STATS_SAMPLES`` (500) evenly spaced train images: decoding the whole
folder would cost minutes for a statistic that is stable to ~1e-2 after a few hundred images."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..errors import TinysetError
from .base import Dataset, DatasetInfo, Split, channel_stats
from .decoded import DecodedCache, make_cache
from .registry import register_dataset

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_SIZE = 224
STATS_SAMPLES = 500
STATS_BATCH = 50  # 50 x 3 x 224 x 224 floats ~ 30 MB per chunk


def read_image_u8(path: Path, size: int) -> torch.Tensor:
    """One file -> uint8 [3, size, size]: RGB, shorter side resized to ``size``, centre crop."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BILINEAR)
            left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise TinysetError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_image(path: Path, size: int) -> torch.Tensor:
    """One file -> float [3, size, size] in [0, 1] (``read_image_u8`` / 255)."""
    return read_image_u8(path, size).float().div_(255.0)


class FileSplit(Split):
    """A split backed by image files; ``_load`` decodes only the requested indices.

    Picklable (paths and a tensor), so ``DataLoader`` workers can decode batches in parallel. With a
    ``DecodedCache`` every file is decoded once and later reads come from the cache (bit-identical)."""

    def __init__(self, files: Sequence[Path], targets: torch.Tensor, image_size: int, cache: DecodedCache | None = None):
        if len(files) != len(targets):
            raise TinysetError(f"{len(files)} files but {len(targets)} labels")
        self.files = [Path(f) for f in files]
        self.targets = targets
        self.image_size = image_size
        self.cache = cache

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, indices: torch.Tensor) -> torch.Tensor:
        if len(indices) == 0:
            return torch.empty(0, 3, self.image_size, self.image_size)
        if self.cache is not None:
            return self.cache.get(indices, lambda i: read_image_u8(self.files[i], self.image_size)).float().div_(255.0)
        return torch.stack([read_image(self.files[int(i)], self.image_size) for i in indices])


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted((d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def _scan(split_dir: Path, class_to_idx: dict[str, int], require_all: bool) -> tuple[list[Path], torch.Tensor]:
    files: list[Path] = []
    labels: list[int] = []
    for d in _class_dirs(split_dir):
        if d.name not in class_to_idx:
            raise TinysetError(f"imagefolder: class folder {d} is not among the train classes ({', '.join(class_to_idx)})")
        found = _images_in(d)
        if not found and require_all:
            raise TinysetError(f"imagefolder: {d} holds no images ({', '.join(EXTENSIONS)})")
        files += found
        labels += [class_to_idx[d.name]] * len(found)
    return files, torch.tensor(labels, dtype=torch.long)


def read_class_map(root: Path, classes: Sequence[str]) -> dict | None:
    """``classes.tsv`` (``wnid<TAB>ImageNet-1k index<TAB>name`` per line), when the tree has one: the
    ImageNet index and readable name of every class folder, so a pretrained 1000-way head can be
    restricted to these classes (``models.pretrained``)."""
    path = root / "classes.tsv"
    if not path.is_file():
        return None
    rows = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip().isdigit():
            raise TinysetError(f"{path}:{n}: expected 'folder<TAB>imagenet index<TAB>name', got {line!r}")
        rows[parts[0]] = (int(parts[1]), parts[2].strip() if len(parts) > 2 else parts[0])
    missing = [c for c in classes if c not in rows]
    if missing:
        raise TinysetError(f"{path} does not list class folder(s) {', '.join(missing)}")
    return {"imagenet_indices": [rows[c][0] for c in classes], "readable_names": [rows[c][1] for c in classes]}


def load_imagefolder(root: str | Path, image_size: int | None = None, decode_cache: str = "memory",
                     cache_dir: str | None = None) -> Dataset:
    """Scan ``root``'s train/ and val/ trees (no image is decoded except the stats sample).
    ``decode_cache`` (memory | disk | off) keeps decoded images for later reads (``data.decoded``)."""
    root = Path(root).expanduser()
    size = image_size or DEFAULT_SIZE
    if not isinstance(size, int) or size <= 0:
        raise TinysetError(f"imagefolder: image_size must be a positive integer, got {image_size!r}")
    if not root.is_dir():
        raise TinysetError(f"imagefolder: folder {root} not found")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise TinysetError(f"imagefolder: {train_dir} not found; expected {root}/train/<class>/<images>")
    classes = [d.name for d in _class_dirs(train_dir)]
    if not classes:
        raise TinysetError(f"imagefolder: {train_dir} has no class subfolders; expected {train_dir}/<class>/<images>")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    files, targets = _scan(train_dir, class_to_idx, require_all=True)
    train = FileSplit(files, targets, size, make_cache(files, size, decode_cache, cache_dir))

    val_dir = root / "val"
    test = None
    if val_dir.is_dir():
        vfiles, vtargets = _scan(val_dir, class_to_idx, require_all=False)
        test = FileSplit(vfiles, vtargets, size, make_cache(vfiles, size, decode_cache, cache_dir)) if vfiles else None
    if test is None:
        log.warning("imagefolder %s: no val/ images; the dataset has no test split", root)

    mean, std = channel_stats(train, max_samples=STATS_SAMPLES, batch=STATS_BATCH)
    info = DatasetInfo(
        name=f"imagefolder:{root}",
        num_classes=len(classes),
        class_names=tuple(classes),
        shape=(3, size, size),
        mean=mean,
        std=std,
        kind="image",
        source=str(root.absolute()),
        extra={"format": "imagefolder", "stats_samples": min(len(train), STATS_SAMPLES), **(read_class_map(root, classes) or {})},
    )
    return Dataset(info=info, train=train, test=test)


@register_dataset("imagefolder:<root>", "an ImageNet-style tree <root>/train/<class>/*.png|jpg and <root>/val/<class>/..., resized to image_size (224)")
def build_imagefolder(arg: str | None, cfg: DataConfig) -> Dataset:
    if not arg:
        raise TinysetError("imagefolder: needs a folder, e.g. imagefolder:data/imagenette")
    return load_imagefolder(arg, cfg.image_size, cfg.decode_cache)
