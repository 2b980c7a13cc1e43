"""Full-data knowledge distillation (``tinyset kd``): a student learns from a frozen teacher on the
whole training set with any registered KD loss (and optionally HE-DA), checkpointing every epoch
and resuming like ``tinyset teacher``."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from . import distributed as dist
from .config import RunConfig, save_yaml, to_dict
from .data import load_dataset
from .eval.trainer import train
from .kd import build_kd_loss
from .models import get_model, save_model
from .teacher import get_teacher, teacher_spec
from .utils.files import atomic_write_text
from .utils.runlog import JsonlLog, resolve_device, versions

log = logging.getLogger(__name__)


def run_kd(cfg: RunConfig, student: str, loss: str, out: Path, epochs: int | None = None, he_da: float | None = None,
           progress: bool = True, seed: int | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data.dataset, cfg.data)
    teacher = get_teacher(ds, cfg.teacher, device, progress)
    seed = cfg.seed if seed is None else seed
    spec = dataclasses.replace(teacher_spec(cfg.teacher, ds.info), he_da=he_da, channels_last=cfg.channels_last, amp=cfg.amp)
    if epochs is not None:
        spec.epochs = epochs
    torch.manual_seed(seed)
    model = get_model(student, ds.info)
    main = dist.is_main_process()
    if main:
        save_yaml({"run": to_dict(cfg), "student": student, "loss": loss, "spec": to_dict(spec), "seed": seed}, out / "config.yaml")
    # DDP under torchrun (see eval.trainer.train); rank 0 writes the checkpoint and the results
    res = train(model, ds.train, spec, build_kd_loss(loss), teacher=teacher.model if loss != "ce" or he_da else None,
                test_split=ds.test, device=device, seed=seed, checkpoint=out / "last.pt",
                runlog=JsonlLog(out / "log.jsonl" if main else None), desc=f"kd {loss}", progress=progress and main,
                distributed=True)
    if main:
        save_model(model, out / "student.pt", student, ds.info, {"test_accuracy": res.test_accuracy, "loss": loss})
    result = {"test_accuracy": res.test_accuracy, "loss": loss, "he_da": he_da, "student": student, "seed": seed,
              "teacher": teacher.reference, "epochs": spec.epochs,
              "seconds_per_epoch": sum(h["seconds"] for h in res.history) / max(len(res.history), 1),
              "versions": versions(), "world_size": dist.get_world_size()}
    if main:
        atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=str))
    dist.barrier()
    return result
