"""Exchange with the field's tools.

Export (``tinyset export RUN --to NAME OUT``; registry ``EXPORTERS``):
- ``imagefolder``: lossless PNGs in class folders (``export.py``).
- ``ddranking``: DD-Ranking's inputs, a folder with ``images.pt`` (float [N, C, H, W], class-major,
  images per class equal, as DD-Ranking's implicit hard labels assume), ``labels.pt`` (the
  teacher's logits on every image, DD-Ranking's soft labels for ``soft_label_mode='S'``; only when
  the run's teacher checkpoint is at hand), ``hard_labels.pt`` and ``tinyset.json`` (class names,
  normalisation, source). Pixels stay in [0, 1]: give DD-Ranking the normalisation in its config.
- ``hf``: a Hugging Face ``datasets`` folder (``save_to_disk``; ``image`` + ``label`` ClassLabel),
  with the optional extra ``pip install 'tinyset[hf]'``.

Import (``tinyset import SOURCE OUT --dataset NAME``): an ImageFolder of images (class folders named
by class name, sanitised as the export does, or by class index), a DD-Ranking folder as above, or a
tensor file (``.pt``/``.safetensors``: a tensor, or a dict with ``images``/``labels``) becomes a
tinyset run directory (artifact + ``config.yaml``), which ``tinyset eval`` scores under the same
protocol as tinyset's own sets."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from ..errors import TinysetError
from ..registry import Registry
from .export import _folder_names, export_imagefolder
from .format import Artifact, atomic_directory, load_artifact, save_artifact
from .preview import hard_labels

log = logging.getLogger(__name__)

EXPORTERS: Registry[Callable[..., Path]] = Registry("export format")
EXPORTERS.register("imagefolder", "lossless PNGs in class folders")(export_imagefolder)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
DDRANKING_IMAGES, DDRANKING_SOFT, DDRANKING_HARD, SIDECAR = "images.pt", "labels.pt", "hard_labels.pt", "tinyset.json"


def _artifact(a: Artifact | str | os.PathLike) -> Artifact:
    return a if isinstance(a, Artifact) else load_artifact(a)


def _dataset_info(manifest: dict):
    from ..data.base import DatasetInfo

    d = manifest.get("dataset_info") or {}
    known = {f.name for f in fields(DatasetInfo)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
    try:
        return DatasetInfo(**kw)
    except TypeError:
        raise TinysetError(f"manifest has no usable dataset_info ({', '.join(sorted(d)) or 'empty'})") from None


@torch.no_grad()
def teacher_logits(art: Artifact, teacher_path: str | os.PathLike | None = None, batch_size: int = 256) -> torch.Tensor | None:
    """The run's teacher's logits on the stored images (no augmentation), or None when the
    teacher checkpoint is not available here."""
    from ..models import load_model
    from ..utils.files import sha256_file

    ref = art.manifest.get("teacher") or {}
    path = Path(teacher_path) if teacher_path else (Path(ref["path"]) if ref.get("path") else None)
    if path is None or not path.is_file():
        log.warning("no teacher checkpoint for %s: exporting without soft labels", art.path)
        return None
    if not teacher_path and ref.get("sha256") and sha256_file(path) != ref["sha256"]:
        raise TinysetError(f"teacher checkpoint {path} changed since the run (sha256 differs); pass the original")
    model, _ = load_model(path, _dataset_info(art.manifest), model_spec=ref.get("model"))
    model.eval()
    return torch.cat([model(x).float() for x in art.images.split(batch_size)])


@EXPORTERS.register("ddranking", "DD-Ranking inputs: images.pt + teacher soft labels (labels.pt)")
def export_ddranking(artifact_or_path, out_root, overwrite: bool = False, teacher: str | None = None) -> Path:
    art = _artifact(artifact_or_path)
    x = art.images.float().contiguous()
    if art.labels is None:
        raise TinysetError(f"artifact {art.path} has no labels; DD-Ranking needs class-major images")
    y = hard_labels(art.labels, len(x))
    counts = torch.bincount(y)
    if not torch.equal(y, torch.sort(y, stable=True).values) or int(counts.min()) != int(counts.max()):
        log.warning("%s is not class-major with equal images per class; pass hard_labels.pt to DD-Ranking", art.path)
    soft = teacher_logits(art, teacher)
    sidecar = {
        "format": "ddranking", "images": DDRANKING_IMAGES, "soft_labels": DDRANKING_SOFT if soft is not None else None,
        "hard_labels": DDRANKING_HARD, "pixel_range": [0.0, 1.0], "ipc": art.manifest.get("ipc"),
        "class_names": art.class_names, "normalization": art.manifest.get("normalization"),
        "dataset": art.manifest.get("dataset"), "method": art.manifest.get("method"), "source": str(art.path),
        "teacher": art.manifest.get("teacher"),
    }
    out_root = Path(out_root)
    with atomic_directory(out_root, overwrite=overwrite, replaceable=lambda p: (p / SIDECAR).is_file(), what="DD-Ranking export") as tmp:
        torch.save(x, tmp / DDRANKING_IMAGES)
        torch.save(y, tmp / DDRANKING_HARD)
        if soft is not None:
            torch.save(soft, tmp / DDRANKING_SOFT)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, default=str))
    log.info("exported %d images to DD-Ranking layout in %s", len(x), out_root)
    return out_root


@EXPORTERS.register("hf", "Hugging Face datasets folder (save_to_disk); needs tinyset[hf]")
def export_hf(artifact_or_path, out_root, overwrite: bool = False) -> Path:
    try:
        import datasets
    except ImportError:
        raise TinysetError("export to hf needs the datasets package: pip install 'tinyset[hf]'") from None
    from .preview import to_uint8

    art = _artifact(artifact_or_path)
    if art.labels is None or art.images.dim() != 4:
        raise TinysetError(f"artifact {art.path} needs images and labels for an hf export")
    y = hard_labels(art.labels, len(art.images)).tolist()
    pixels = to_uint8(art.images).permute(0, 2, 3, 1).numpy()
    pil = [Image.fromarray(p[:, :, 0] if p.shape[2] == 1 else p) for p in pixels]
    names = art.class_names or [str(i) for i in range(max(y) + 1)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    ds = datasets.Dataset.from_dict({"image": pil, "label": y}, features=features)
    out_root = Path(out_root)
    with atomic_directory(out_root, overwrite=overwrite, replaceable=lambda p: (p / "dataset_info.json").is_file(), what="hf export") as tmp:
        ds.save_to_disk(str(tmp / "data"))
        for f in (tmp / "data").iterdir():  # save_to_disk wants to create its folder itself
            f.rename(tmp / f.name)
        (tmp / "data").rmdir()
    return out_root


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def _load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means an unreadable file to the user
        raise TinysetError(f"{path} could not be read as tensors ({type(e).__name__})") from None
    if isinstance(obj, torch.Tensor):
        return {"images": obj}
    if isinstance(obj, dict):
        alias = {"images": ("images", "image", "x", "data"), "labels": ("labels", "label", "y", "targets")}
        out = {}
        for key, names in alias.items():
            hit = next((obj[n] for n in names if isinstance(obj.get(n), torch.Tensor)), None)
            if hit is not None:
                out[key] = hit
        if "images" in out:
            return out
    raise TinysetError(f"{path} holds no image tensor (expected a tensor or a dict with 'images')")


def _read_ddranking(root: Path) -> dict[str, torch.Tensor]:
    t = {"images": _load_tensor_file(root / DDRANKING_IMAGES)["images"]}
    if (root / DDRANKING_HARD).is_file():
        t["labels"] = torch.load(root / DDRANKING_HARD, map_location="cpu", weights_only=True)
    if (root / DDRANKING_SOFT).is_file():
        t["soft_labels"] = torch.load(root / DDRANKING_SOFT, map_location="cpu", weights_only=True)
    return t


def _read_imagefolder(root: Path, info) -> dict[str, torch.Tensor]:
    """Images of every class folder, resized (bilinear) to the dataset's size when they differ.
    Folders are matched to the dataset's classes by (sanitised) name, else by index."""
    by_name = {name: i for i, name in enumerate(_folder_names(info.class_names))}
    by_name.update({name: i for i, name in enumerate(info.class_names)})
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise TinysetError(f"{root} has no class folders")
    c, h, w = info.shape
    images, labels = [], []
    for folder in folders:
        if folder.name in by_name:
            cls = by_name[folder.name]
        elif folder.name.isdigit() and int(folder.name) < info.num_classes:
            cls = int(folder.name)
        else:
            raise TinysetError(f"folder {folder.name!r} in {root} is not a class of {info.name} (by name or index)")
        for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            with Image.open(f) as im:
                im = im.convert("L" if c == 1 else "RGB")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, c)
            images.append(t.permute(2, 0, 1).float() / 255.0)
            labels.append(cls)
    if not images:
        raise TinysetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return {"images": torch.stack(images), "labels": torch.tensor(labels, dtype=torch.long)}


def read_source(source: str | os.PathLike, info) -> tuple[dict[str, torch.Tensor], str]:
    source = Path(source)
    if source.is_file():
        return _load_tensor_file(source), "tensor file"
    if not source.is_dir():
        raise TinysetError(f"import source {source} does not exist")
    if (source / DDRANKING_IMAGES).is_file():
        return _read_ddranking(source), "ddranking"
    return _read_imagefolder(source, info), "imagefolder"


def _check_images(t: dict[str, torch.Tensor], info, source: Path) -> dict[str, torch.Tensor]:
    x = t["images"].detach().float().cpu()
    if x.dim() == 3 and info.shape[0] == 1:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != info.shape[0]:
        raise TinysetError(f"{source}: images of shape {list(x.shape)} do not fit {info.name} ({list(info.shape)})")
    if tuple(x.shape[2:]) != tuple(info.shape[1:]):
        x = torch.nn.functional.interpolate(x, size=tuple(info.shape[1:]), mode="bilinear", antialias=True, align_corners=False)
    if not torch.isfinite(x).all():
        raise TinysetError(f"{source}: images contain NaN or infinite values")
    if float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3:
        # the field often stores normalised images (DD-Ranking's baselines do): undo the dataset's
        mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        log.warning("%s: pixels outside [0, 1]; taking them as normalised with %s's mean/std", source, info.name)
        x = x * std + mean
    t = dict(t, images=x.clamp(0, 1).contiguous())
    n = len(x)
    if "labels" not in t:
        # DD-Ranking's convention: no hard labels means class-major, equal images per class (its soft
        # labels are the teacher's opinion, not the class an image was made for)
        if n % info.num_classes:
            raise TinysetError(f"{source}: {n} images without labels cannot be class-major for {info.num_classes} classes")
        t["labels"] = torch.arange(info.num_classes).repeat_interleave(n // info.num_classes)
    t["labels"] = hard_labels(t["labels"], n)
    if int(t["labels"].max()) >= info.num_classes:
        raise TinysetError(f"{source}: label {int(t['labels'].max())} is out of range for {info.num_classes} classes")
    return t


def _imported_teacher(cfg, teacher: str | os.PathLike) -> dict:
    """Point ``cfg.teacher`` at the given checkpoint or run's teacher; returns its reference."""
    import yaml

    from ..config import apply_mapping
    from ..models import sha256_file

    path = Path(teacher)
    if path.is_file():
        cfg.teacher.checkpoint = str(path.resolve())
        return {"source": "checkpoint", "path": cfg.teacher.checkpoint, "sha256": sha256_file(path)}
    if not (path / "config.yaml").exists():
        raise TinysetError(f"--teacher {teacher}: not a checkpoint file or a tinyset run directory (no config.yaml)")
    apply_mapping(cfg.teacher, (yaml.safe_load((path / "config.yaml").read_text()) or {}).get("teacher", {}))
    ref = {}
    if (path / "manifest.json").exists():
        ref = json.loads((path / "manifest.json").read_text()).get("teacher") or {}
    if ref.get("path") and Path(ref["path"]).is_file() and not cfg.teacher.pretrained:
        cfg.teacher.checkpoint = ref["path"]  # the very weights that made the set, wherever the cache is
    return {**ref, "from_run": str(path.resolve())}


def import_set(source: str | os.PathLike, out: str | os.PathLike, dataset: str, data_root: str | None = None,
               ipc: int | None = None, overwrite: bool = False, teacher: str | os.PathLike | None = None) -> Path:
    """Turn another tool's distilled images into a run directory that ``tinyset eval`` scores.

    ``teacher`` is the teacher that made the set: a checkpoint file, or a tinyset run directory whose
    teacher (its config and, when the file is there, the very checkpoint) is reused. It goes into
    the run's config, so ``tinyset eval`` uses it instead of training a default teacher."""
    from ..config import RunConfig, save_yaml, to_dict
    from ..data import load_dataset
    from ..utils.runlog import versions

    cfg = RunConfig(method="imported")
    cfg.data.dataset = dataset
    cfg.data.data_root = data_root
    teacher_ref = _imported_teacher(cfg, teacher) if teacher is not None else None
    info = load_dataset(dataset, cfg.data).info
    tensors, kind = read_source(source, info)
    tensors = _check_images(tensors, info, Path(source))
    y = tensors["labels"]
    order = torch.argsort(y, stable=True)  # class-major like every tinyset set
    tensors = {k: v[order] if v.shape[:1] == y.shape else v for k, v in tensors.items()}
    counts = torch.bincount(tensors["labels"], minlength=info.num_classes)
    manifest = {
        "dataset": info.name, "dataset_info": info.to_dict(), "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "image_shape": list(info.shape), "ipc": ipc or int(counts.max()), "method": "imported",
        "method_config": {"source": str(Path(source).resolve()), "source_kind": kind},
        "config": to_dict(cfg), "seed": cfg.seed, "teacher": teacher_ref, "wall_time_seconds": 0.0,
        "synthesis": {"seconds": 0.0, "teacher_forward_images": 0, "teacher_backward_images": 0, "units": []},
        "versions": versions(),
    }
    out = Path(out)
    save_artifact(out, tensors, manifest, preview=tensors["images"], preview_labels=tensors["labels"],
                  class_names=list(info.class_names), overwrite=overwrite)
    save_yaml(to_dict(cfg), out / "config.yaml")
    log.info("imported %d images (%s) from %s into %s", len(y), kind, source, out)
    return out
