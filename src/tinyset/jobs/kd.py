"""Full-data knowledge distillation (``tinyset kd``): a student learns from a frozen teacher on the
whole training set with any registered KD loss (and optionally HE-DA), checkpointing every epoch
and resuming like ``tinyset teacher``."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import torch

from .. import distributed as dist
from ..config import ConfigError, RunConfig, save_yaml, to_dict
from ..errors import TinysetError
from ..data import load_dataset
from ..eval.trainer import train
from ..kd import build_kd_loss
from ..models import get_model, save_model
from ..teachers.supervised import get_teacher, teacher_spec
from ..utils.digest import json_digest
from ..utils.files import atomic_write_text, no_litter
from ..utils.runlog import JsonlLog, resolve_device, versions
from .validate import check_against_dataset, check_config

log = logging.getLogger(__name__)


def kd_identity(cfg: RunConfig, student: str, loss: str, spec, seed: int, he_da: float | None) -> dict:
    """What makes a kd run the same run: resuming is allowed only when this matches."""
    run = to_dict(cfg)
    for k in ("device", "evaluate", "eval", "method", "method_args", "ipc"):
        run.pop(k, None)  # do not change a kd run's result
    run["data"].pop("num_workers", None)
    run["teacher"].pop("trust_checkpoint", None)
    return {"run": run, "student": student, "loss": loss, "spec": to_dict(spec), "seed": seed, "he_da": he_da}


def _hash(d: dict) -> str:
    return json_digest(d)


def default_out(cfg: RunConfig, student: str, loss: str, epochs: int | None) -> Path:
    """``runs/kd-<dataset>-<loss>-<student>-e<epochs>``: different runs never share a folder by default."""
    safe = lambda t: "".join(c if c.isalnum() or c in "-_." else "_" for c in str(t))  # noqa: E731
    ep = epochs if epochs is not None else cfg.teacher.epochs
    return Path("runs") / f"kd-{safe(Path(cfg.data.dataset).name)}-{safe(loss)}-{safe(student)}-e{ep}"


def run_kd(cfg: RunConfig, student: str, loss: str, out: Path | None = None, epochs: int | None = None,
           he_da: float | None = None, progress: bool = True, seed: int | None = None, overwrite: bool = False) -> dict:
    """Train ``student`` from the teacher on the full training set. A folder holding a different kd
    run (other loss, epochs, student, teacher, ...) is refused, never resumed; ``overwrite`` clears it."""
    from ..kd import KD_LOSSES

    out = Path(out) if out is not None else default_out(cfg, student, loss, epochs)
    problems: list[str] = []
    if loss not in KD_LOSSES:
        problems.append(f"unknown kd loss {loss!r}; {KD_LOSSES.suggest(loss)}see `tinyset kd-losses`")
    if epochs is not None and epochs < 1:
        problems.append(f"--epochs must be at least 1, got {epochs}")
    if he_da is not None and not 0 < he_da <= 1:
        problems.append(f"--he-da must be in (0, 1], got {he_da}")
    try:
        check_config(cfg, synthesis=False, evaluation=False, teacher=True)
    except ConfigError as e:
        problems = e.problems + problems
    if problems:
        raise ConfigError(problems)
    ds = load_dataset(cfg.data.dataset, cfg.data)
    check_against_dataset(cfg, ds, synthesis=False, evaluation=False, teacher=True, extra_models={"student": student})
    device = resolve_device(cfg.device)
    seed = cfg.seed if seed is None else seed
    spec = dataclasses.replace(teacher_spec(cfg.teacher, ds.info), he_da=he_da, channels_last=cfg.channels_last, amp=cfg.amp)
    if epochs is not None:
        spec.epochs = epochs
    ident = kd_identity(cfg, student, loss, spec, seed, he_da)
    key = _hash(ident)
    stamp = out / "kd_identity.json"
    main = dist.is_main_process()
    if out.exists() and any(out.iterdir()):
        previous = json.loads(stamp.read_text()).get("hash") if stamp.exists() else None
        if previous != key:
            if not overwrite:
                raise TinysetError(f"output {out} holds a different kd run ({_describe(out)}); choose another --out or pass --overwrite")
            dist.barrier()  # every rank has read the folder before rank 0 clears it
            if main:
                log.info("clearing %s (a different kd run)", out)
                shutil.rmtree(out)
        elif (out / "last.pt").exists():
            log.info("resuming the same kd run in %s", out)
    teacher = get_teacher(ds, cfg.teacher, device, progress)
    # a run that fails before its first checkpoint leaves no output folder behind
    with no_litter(out, lambda d: (d / "last.pt").exists()):
        out.mkdir(parents=True, exist_ok=True)
        if main:
            atomic_write_text(stamp, json.dumps({"hash": key, **ident}, indent=2, default=str))
            save_yaml({"run": to_dict(cfg), "student": student, "loss": loss, "spec": to_dict(spec), "seed": seed}, out / "config.yaml")
        torch.manual_seed(seed)
        model = get_model(student, ds.info)
        # DDP under torchrun (see eval.trainer.train); rank 0 writes the checkpoint and the results
        res = train(model, ds.train, spec, build_kd_loss(loss), teacher=teacher.model if loss != "ce" or he_da else None,
                    test_split=ds.test, device=device, seed=seed, checkpoint=out / "last.pt",
                    runlog=JsonlLog(out / "log.jsonl" if main else None), desc=f"kd {loss}", progress=progress and main,
                    distributed=True, log_fields={"stage": "kd", "kd_loss": loss, "student": student, "seed": seed})
    if main:
        save_model(model, out / "student.pt", student, ds.info, {"test_accuracy": res.test_accuracy, "loss": loss})
    result = {"test_accuracy": res.test_accuracy, "loss": loss, "he_da": he_da, "student": student, "seed": seed,
              "teacher": teacher.reference, "epochs": spec.epochs, "out": str(out),
              "seconds_per_epoch": sum(h["seconds"] for h in res.history) / max(len(res.history), 1),
              "versions": versions(), "world_size": dist.get_world_size()}
    if main:
        atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=str))
    dist.barrier()
    return result


def _describe(out: Path) -> str:
    for name in ("kd_identity.json", "result.json"):
        p = out / name
        if p.exists():
            try:
                d = json.loads(p.read_text())
            except json.JSONDecodeError:
                continue
            epochs = (d.get("spec") or {}).get("epochs", d.get("epochs"))
            return f"loss {d.get('loss')}, student {d.get('student')}, {epochs} epochs"
    return "files from another run"
