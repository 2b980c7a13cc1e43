"""Teachers ("squeeze"): train once, cache by dataset + model + config hash, resume, or load a
user's own checkpoint. Nothing downloads weights."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .. import distributed as dist
from ..config import TeacherConfig
from ..data.base import Dataset, DatasetInfo
from ..errors import TinysetError
from ..eval.trainer import TrainSpec, accuracy, train
from ..kd import build_kd_loss
from ..models import get_model, load_model, save_model, sha256_file
from ..models.pretrained import pretrained_teacher
from ..utils.cache import cache_root, cached_dir  # cache_root is also re-exported from here
from ..utils.digest import folder_key
from ..utils.files import atomic_write_text, no_litter
from ..utils.runlog import JsonlLog

log = logging.getLogger(__name__)


# The cache key hashes the user's knobs (TeacherConfig) and this version, not the derived TrainSpec,
# so adding a trainer option does not orphan cached teachers. Bump it when teacher_spec changes.
RECIPE_VERSION = 1


def teacher_spec(tcfg: TeacherConfig, info: DatasetInfo) -> TrainSpec:
    """The teacher recipe: SGD + cosine; pad-and-crop for small images, random-resized crops for large."""
    small = info.kind == "image" and info.image_size <= 64
    return TrainSpec(
        epochs=tcfg.epochs, batch_size=tcfg.batch_size, optimizer=tcfg.optimizer, lr=tcfg.lr,
        weight_decay=tcfg.weight_decay, augment="shift" if small else ("rrc" if info.kind == "image" else "none"),
        shift_pad=max(1, info.image_size // 8) if info.kind == "image" else 0, amp=tcfg.amp,
    )


def teacher_key(tcfg: TeacherConfig, ds: Dataset, *, dataset_name: str | None = None) -> str:
    """The cache folder name of a trained teacher. ``dataset_name`` overrides the dataset's identity
    (``teacher_dir`` uses it to find teachers cached under the name as typed, before paths were resolved)."""
    info = ds.info
    name = dataset_name or info.identity
    # Only the knobs that shape a trained teacher: checkpoint/pretrained teachers never reach this
    # key, so their fields stay out of it (adding them must not orphan teachers cached before).
    skip = ("checkpoint", "cache_dir", "extra", "trust_checkpoint", "pretrained", "head_classes")
    knobs = {k: v for k, v in asdict(tcfg).items() if k not in skip}
    if not knobs.get("amp"):
        knobs.pop("amp", None)  # a float32 teacher keeps the key it had before the amp knob existed
    ident = {
        "dataset": name, "n_train": len(ds.train), "shape": list(info.shape), "classes": list(info.class_names),
        "teacher": knobs, "recipe": RECIPE_VERSION,
    }
    return folder_key(name, tcfg.model.replace(':', '_').replace(',', '_').replace('=', ''), ident)


def teacher_dir(tcfg: TeacherConfig, ds: Dataset) -> Path:
    """Where ``ds``'s trained teacher for ``tcfg`` is cached; one cached under the dataset's name as typed
    (keys before dataset paths were resolved) is found there rather than trained again."""
    keys = [teacher_key(tcfg, ds), teacher_key(tcfg, ds, dataset_name=ds.info.name)]
    return cached_dir(cache_root(tcfg.cache_dir) / "teachers", keys, ("teacher.pt", "last.pt"))


@dataclass
class Teacher:
    model: nn.Module
    reference: dict  # goes into every manifest: path, sha256, model, test accuracy
    directory: Path | None  # where per-teacher caches (class statistics) live


def get_teacher(
    ds: Dataset, tcfg: TeacherConfig, device: torch.device | str = "cpu", progress: bool = True,
    runlog: JsonlLog | None = None, num_workers: int = 0,
) -> Teacher:
    """A frozen teacher for ``ds``: pretrained weights, the user's checkpoint, else the cached one, else train it."""
    if tcfg.pretrained:
        return _pretrained(ds, tcfg, device)
    if tcfg.checkpoint:
        model, ckpt = load_model(tcfg.checkpoint, ds.info, model_spec=tcfg.model, trust=tcfg.trust_checkpoint)
        ref = {"source": "checkpoint", "path": str(Path(tcfg.checkpoint).resolve()), "sha256": sha256_file(tcfg.checkpoint),
               "model": ckpt.get("model"), "test_accuracy": (ckpt.get("meta") or {}).get("test_accuracy")}
        dirpath = cache_root(tcfg.cache_dir) / "user" / ref["sha256"][:16]
        return Teacher(_freeze(model.to(device)), ref, dirpath)
    d = teacher_dir(tcfg, ds)
    final = d / "teacher.pt"
    if not final.exists():
        resuming = (d / "last.pt").exists()
        log.info("no cached teacher: %s %s on %s for %d epochs (cached afterwards in %s)",
                 "resuming" if resuming else "training", tcfg.model, ds.info.name, tcfg.epochs, d)
        train_teacher(ds, tcfg, d, device, progress, runlog, num_workers)
    # Always the model loaded from the file, also right after training: the trainer leaves its model
    # channels_last, a loaded one is contiguous, and the memory format changes float results (the
    # first run's images differed from every rerun's). One code path = one teacher state.
    model, ckpt = load_model(final, ds.info)
    log.info("teacher: %s (test accuracy %.2f%%)", final, ckpt["meta"].get("test_accuracy", float("nan")))
    ref = {"source": "trained", "path": str(final), "sha256": sha256_file(final), "model": tcfg.model,
           "test_accuracy": ckpt["meta"].get("test_accuracy"), "epochs": tcfg.epochs, "seed": tcfg.seed}
    _warn_near_chance(ref["test_accuracy"], ds.info.num_classes, tcfg.model)
    return Teacher(_freeze(model.to(device)), ref, d)


def teacher_source(ds: Dataset, tcfg: TeacherConfig) -> tuple[str, str]:
    """Which teacher ``get_teacher`` would return and how it gets it, without loading or training
    anything: (kind, one line). kind is pretrained | checkpoint | cached | resume | train; only
    ``train`` and ``resume`` cost training time."""
    if tcfg.pretrained:
        return "pretrained", f"pretrained {tcfg.model} ({tcfg.pretrained})"
    if tcfg.checkpoint:
        return "checkpoint", f"checkpoint {tcfg.checkpoint}"
    d = teacher_dir(tcfg, ds)
    if (d / "teacher.pt").exists():
        return "cached", f"cached {tcfg.model} ({tcfg.epochs} epochs) at {d / 'teacher.pt'}"
    what = f"{tcfg.model} on {ds.info.name} for {tcfg.epochs} epochs (cache {d})"
    if (d / "last.pt").exists():
        return "resume", f"not finished: resumes training {what}"
    return "train", f"not cached: trains {what}"


def _warn_near_chance(acc: float | None, num_classes: int, name: str) -> None:
    """A teacher at chance level makes every soft label noise: say so loudly."""
    chance = 100.0 / max(num_classes, 1)
    if acc is not None and acc < 1.5 * chance:
        log.warning("teacher %s is near chance: %.2f%% test accuracy (chance %.2f%%); train it longer "
                    "(teacher.epochs) or check the data", name, acc, chance)


def _pretrained(ds: Dataset, tcfg: TeacherConfig, device) -> Teacher:
    """An ImageNet-pretrained torchvision teacher (``models.pretrained``); its test accuracy is
    measured once and kept beside its per-teacher caches."""
    model, ref = pretrained_teacher(tcfg.model, ds.info, tcfg.pretrained, tcfg.head_classes or None)
    path = Path(tcfg.pretrained).expanduser()
    ref["sha256"] = sha256_file(path) if path.is_file() else None
    ref["path"] = ref["weights"]
    ident = json.dumps({"weights": ref["weights"], "sha256": ref["sha256"], "head": ref["head_classes"],
                        "dataset": ds.info.identity, "shape": list(ds.info.shape)}, sort_keys=True)
    d = cache_root(tcfg.cache_dir) / "pretrained" / hashlib.sha256(ident.encode()).hexdigest()[:16]
    model = _freeze(model.to(device))
    meta = d / "meta.json"
    if meta.exists():
        ref["test_accuracy"] = json.loads(meta.read_text()).get("test_accuracy")
    else:
        ref["test_accuracy"] = accuracy(model, ds.test, torch.device(device)) if ds.test is not None else None
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta, json.dumps({**ref, "dataset": ds.info.name}, indent=2))
    log.info("teacher: pretrained %s, %s%% test accuracy on %s", ref["weights"], ref["test_accuracy"], ds.info.name)
    return Teacher(model, ref, d)


def get_extra_teachers(ds: Dataset, tcfg: TeacherConfig, device, progress: bool = True) -> list[Teacher]:
    """The additional teachers of ``teacher.extra``: a ``.pt`` path is a checkpoint, anything else a
    model name trained (once, cached) with the same recipe as the main teacher."""
    out = []
    for i, spec in enumerate(tcfg.extra):
        if spec.endswith((".pt", ".safetensors")) or Path(spec).exists():
            cfg = dataclasses.replace(tcfg, checkpoint=spec, extra=())
        else:
            # a seed of its own: an extra teacher of the main one's architecture would otherwise be
            # the identical cached network
            cfg = dataclasses.replace(tcfg, model=spec, checkpoint=None, extra=(), seed=tcfg.seed + 1 + i)
        out.append(get_teacher(ds, cfg, device, progress))
    return out


def train_teacher(
    ds: Dataset, tcfg: TeacherConfig, directory: Path, device, progress: bool = True, runlog: JsonlLog | None = None,
    num_workers: int = 0,
) -> nn.Module:
    torch.manual_seed(tcfg.seed)  # weight init
    model = get_model(tcfg.model, ds.info)
    spec = dataclasses.replace(teacher_spec(tcfg, ds.info), num_workers=num_workers)
    # a teacher that fails before its first epoch checkpoint leaves no empty cache folder behind
    with no_litter(directory, lambda d: (d / "last.pt").exists() or (d / "teacher.pt").exists()):
        directory.mkdir(parents=True, exist_ok=True)
        # under torchrun every rank trains its share (DDP) and rank 0 writes the files
        res = train(
            model, ds.train, spec, build_kd_loss("ce"), test_split=ds.test, device=device, seed=tcfg.seed,
            checkpoint=directory / "last.pt", runlog=runlog or JsonlLog(directory / "log.jsonl"),
            desc=f"teacher {tcfg.model}", progress=progress and dist.is_main_process(), distributed=True,
            log_fields={"stage": "teacher", "model": tcfg.model},
        )
    meta = {"test_accuracy": res.test_accuracy, "epochs": tcfg.epochs, "config": asdict(tcfg), "dataset": ds.info.name}
    if dist.is_distributed():
        meta["world_size"] = dist.get_world_size()
    if dist.is_main_process():
        save_model(model, directory / "teacher.pt", tcfg.model, ds.info, meta)
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2, default=str))
        (directory / "last.pt").unlink(missing_ok=True)
    dist.barrier()  # teacher.pt exists for every rank from here on
    log.info("teacher: trained %s to %.2f%% test accuracy -> %s", tcfg.model, res.test_accuracy or float("nan"), directory)
    return model


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def teacher_accuracy(teacher: Teacher, ds: Dataset, device) -> float:
    if ds.test is None:
        raise TinysetError(f"dataset {ds.info.name} has no test split")
    return accuracy(teacher.model, ds.test, torch.device(device))
