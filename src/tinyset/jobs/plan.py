"""What a ``distill`` would do, without doing it (``--print-config`` / ``--dry-run``): the units, the
teacher (cached or to train), the students to train and, with ``measure``, a rough time from timing
a few real optimisation steps of the teacher and the student on this machine."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import RunConfig
from ..data import load_dataset
from ..methods import METHODS, MethodContext
from .validate import check_against_dataset, check_config, needs_teacher


def _step_seconds(spec: str, ds, batch: int, device, steps: int = 3) -> float:
    """Median-free rough cost of one forward+backward step on a real batch (after one warm-up)."""
    from ..models import get_model

    model = get_model(spec, ds.info).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = ds.train.get_batch(torch.arange(min(batch, len(ds.train))))
    x, y = x.to(device), y.to(device)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps


def plan_distill(cfg: RunConfig, out: Path, measure: bool = False) -> dict:
    from ..teachers.supervised import teacher_dir
    from ..utils.runlog import resolve_device

    check_config(cfg)
    ds = load_dataset(cfg.data.dataset, cfg.data)
    check_against_dataset(cfg, ds)
    cls = METHODS.get(cfg.method)
    method = cls.__new__(cls)  # planning needs the config and the dataset, not a teacher
    method.cfg = cls.Config()
    from ..config import apply_mapping

    apply_mapping(method.cfg, dict(cfg.method_args))
    method.ctx = MethodContext(dataset=ds, teacher=None, device=torch.device("cpu"))
    units = method.plan(cfg.ipc)
    plan: dict = {"output": str(out), "units": f"{len(units)} ({', '.join(u.key for u in units[:3])}{', ...' if len(units) > 3 else ''})"}
    uses_teacher = needs_teacher(cfg)
    cached = False
    if uses_teacher and not cfg.teacher.checkpoint:
        d = teacher_dir(cfg.teacher, ds)
        cached = (d / "teacher.pt").exists()
        plan["teacher"] = f"cached ({d})" if cached else f"to train: {cfg.teacher.model}, {cfg.teacher.epochs} epochs"
    elif cfg.teacher.checkpoint:
        plan["teacher"] = f"checkpoint {cfg.teacher.checkpoint}"
    e = cfg.eval
    students = len(e.label_modes) * e.seeds * (2 if e.random_baseline else 1) if cfg.evaluate else 0
    plan["students"] = f"{students} x {e.epochs} epochs of {e.student}" if students else "none (--no-eval)"
    if not measure:
        return plan
    device = resolve_device(cfg.device)
    n = len(ds.train)
    total = 0.0
    parts = []
    if uses_teacher and not cached and not cfg.teacher.checkpoint:
        t = _step_seconds(cfg.teacher.model, ds, cfg.teacher.batch_size, device) * cfg.teacher.epochs * -(-n // cfg.teacher.batch_size)
        parts.append(f"teacher ~{t:.0f}s")
        total += t
    iters = getattr(method.cfg, "iterations", None)
    if iters and uses_teacher:
        bs = getattr(method.cfg, "batch_size", 100)
        t = _step_seconds(cfg.teacher.model, ds, bs, device) * iters * len(units)
        parts.append(f"synthesis ~{t:.0f}s (upper bound: no early stop)")
        total += t
    if students:
        n_set = cfg.ipc * ds.info.num_classes
        steps = e.epochs * max(1, -(-n_set // e.batch_size))
        t = _step_seconds(e.student, ds, min(e.batch_size, n_set), device) * steps * students
        if "soft" in e.label_modes:
            t *= 1.3  # the teacher's forward pass on every soft-label batch
        parts.append(f"evaluation ~{t:.0f}s")
        total += t
    plan["rough time"] = f"~{total:.0f}s on {device} ({'; '.join(parts) or 'seconds'}); measured from 3 steps each, +-50%"
    return plan
