"""Export an artifact as an ImageFolder tree (``<root>/<class>/<index>.png``) for tools that know
nothing about tinyset. PNG is lossless and pixels are rounded from [0, 1] to 8 bits exactly as the
preview does, so an image made of k/255 values exports bit-exactly.

Note: torchvision's ``ImageFolder`` numbers classes by sorted folder name, which can differ from
the artifact's class order; map through the manifest's ``class_to_idx`` when that matters."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..errors import TinysetError
from .format import Artifact, atomic_directory, load_artifact
from .preview import hard_labels, to_uint8

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def sanitize_class_name(name: str) -> str:
    """A folder name safe on Linux, macOS and Windows: path separators and reserved characters
    become ``_``; empty, ``.`` and ``..`` names become ``_``-prefixed."""
    safe = _UNSAFE.sub("_", str(name)).strip().rstrip(".")
    return safe if safe and safe not in (".", "..") else f"_{safe}"


def _folder_names(class_names: Sequence[str]) -> list[str]:
    """Sanitised, unique (case-insensitively, for macOS/Windows) folder names in class order."""
    out: list[str] = []
    used: set[str] = set()
    for i, name in enumerate(class_names):
        safe = sanitize_class_name(name)
        if safe.lower() in used:
            safe = f"{safe}_{i}"
        used.add(safe.lower())
        out.append(safe)
    return out


def _is_export_tree(path: Path) -> bool:
    """Only a previous export (class folders of PNGs) or an empty folder may be overwritten."""
    for entry in path.iterdir():
        if not entry.is_dir() or any(not f.is_file() or f.suffix != ".png" for f in entry.iterdir()):
            return False
    return True


def export_imagefolder(artifact_or_path: Artifact | str | os.PathLike, out_root: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write every image of an artifact to ``out_root/<class_name>/<index>.png`` atomically (temp
    dir + rename) and return ``out_root``. ``<index>`` is the image's zero-padded position in the
    artifact, so files map back to the tensors. Soft labels export under their argmax class."""
    art = artifact_or_path if isinstance(artifact_or_path, Artifact) else load_artifact(artifact_or_path)
    images = art.images
    if images.dim() != 4:
        raise TinysetError(f"artifact {art.path} holds vectors (shape {list(images.shape)}); imagefolder export needs images")
    n, c = images.shape[:2]
    if c not in (1, 3):
        raise TinysetError(f"artifact {art.path} has {c}-channel images; PNG export supports 1 or 3 channels")
    if art.labels is None:
        raise TinysetError(f"artifact {art.path} has no labels; imagefolder export needs a class per image")
    labels = hard_labels(art.labels, n)
    num_classes = int(labels.max()) + 1 if n else 0
    names = art.class_names or []
    if len(names) < num_classes:
        names = list(names) + [str(i) for i in range(len(names), num_classes)]
    folders = _folder_names(names)

    pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()  # NHWC
    width = len(str(max(n - 1, 0)))
    out_root = Path(out_root)
    with atomic_directory(out_root, overwrite=overwrite, replaceable=_is_export_tree, what="imagefolder export") as tmp:
        for cls in sorted(set(labels.tolist())):
            (tmp / folders[cls]).mkdir()
        for i in range(n):
            arr = pixels[i][:, :, 0] if c == 1 else pixels[i]  # HxW -> mode L, HxWx3 -> RGB
            Image.fromarray(arr).save(tmp / folders[int(labels[i])] / f"{i:0{width}d}.png", format="PNG")
    log.info("exported %d images in %d classes to %s", n, len(set(labels.tolist())), out_root)
    return out_root
