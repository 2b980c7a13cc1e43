"""Self-supervised distillation end to end: SSL teacher -> whole-set method (krr_st, ssdd,
ssl_random) -> artifact of stored components (+ decoder) -> pre-training pairs for transfer.

Runs in place of the unit loop of ``jobs.distill.distill`` for methods with ``self_supervised = True``;
the same run layout (config.yaml, log.jsonl, artifact written atomically)."""
from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import torch

from ..artifact import load_artifact, save_artifact
from ..config import RunConfig, save_yaml, to_dict
from ..data import load_dataset
from ..data.base import recorded_identity
from ..errors import TinysetError
from ..methods import MethodContext, build_method
from ..utils.runlog import JsonlLog, resolve_device, versions
from ..utils.seeding import derive_seed, generator
from ..teachers.ssl import SSLConfig, get_ssl_teacher
from .result import DistillResult

log = logging.getLogger(__name__)


def ssl_config(cfg: RunConfig) -> SSLConfig:
    return SSLConfig.from_teacher_config(cfg.teacher, (cfg.method_args or {}).get("ssl", "barlow_twins"))


def distill_ssl(cfg: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True, ds=None,
                ssl_override: SSLConfig | None = None):
    """``ds`` (optional) is the already loaded source, e.g. a subset for a smoke run."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise TinysetError(f"output {out} already exists; pass --overwrite or choose another --out")
    device = resolve_device(cfg.device)
    ds = ds if ds is not None else load_dataset(cfg.data.dataset, cfg.data)
    if ds.info.kind != "image":
        raise TinysetError(f"method {cfg.method} needs an image dataset; {ds.info.name} holds vectors")
    teacher = get_ssl_teacher(ds, ssl_override or ssl_config(cfg), device, progress)
    partial = out.parent / f".{out.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    runlog = JsonlLog(partial / "log.jsonl")
    runlog.write("start", config=to_dict(cfg))
    ctx = MethodContext(dataset=ds, teacher=None, device=device, runlog=runlog, progress=progress,
                        cache_dir=teacher.directory)
    method = build_method(cfg.method, cfg.method_args, ctx)
    t0 = time.perf_counter()
    res = method.distill_set(teacher, generator(derive_seed(cfg.seed, cfg.method, "whole-set")))
    seconds = time.perf_counter() - t0
    tensors = {k: v.detach().float().contiguous() for k, v in res["tensors"].items()}
    floats = sum(t.numel() for t in tensors.values())
    image_floats = math.prod(ds.info.shape)
    stats = res["stats"]
    manifest = {
        "dataset": ds.info.name, "dataset_info": ds.info.to_dict(), "class_names": list(ds.info.class_names),
        "normalization": {"mean": list(ds.info.mean), "std": list(ds.info.std)}, "image_shape": list(ds.info.shape),
        "ipc": None, "method": cfg.method, "method_config": method.resolved_config(), "config": to_dict(cfg),
        "seed": cfg.seed, "teacher": teacher.reference, "self_supervised": True, "target_dim": teacher.dim,
        "stored_floats": floats, "budget_images": floats / image_floats,
        "wall_time_seconds": seconds, "device": str(device), "versions": versions(),
        "synthesis": {"seconds": seconds, "teacher_forward_images": 0, "teacher_backward_images": 0,
                      **{k: v for k, v in stats.items() if k != "source_indices"}},
    }
    dec = res["decoder"] or {"name": "pixels", "config": {}}
    roles = {k: "network" if k.startswith("view") else ("bases" if k.endswith("bases") else
             ("coefficients" if k.endswith("coeff") else None)) for k in tensors}
    save_artifact(out, tensors, manifest, preview="decoded", class_names=["synthetic"], overwrite=overwrite,
                  decoder=dec["name"], decoder_config=dec["config"], roles={k: v for k, v in roles.items() if v})
    save_yaml(to_dict(cfg), out / "config.yaml")
    shutil.copy(partial / "log.jsonl", out / "log.jsonl")
    shutil.rmtree(partial, ignore_errors=True)
    return DistillResult(out, load_artifact(out, verify=False).manifest, None)


def load_pretrain_pairs(run: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images, targets, manifest) of a self-supervised run, decoded (all views for ``bases``)."""
    art = load_artifact(run)
    if not art.manifest.get("self_supervised") or art.targets is None:
        raise TinysetError(f"{run} is not a self-supervised run (made by {art.manifest.get('method')}); transfer needs krr_st, ssdd or ssl_random")
    return art.images, art.targets, art.manifest


def load_pretrain_set(run: str | Path) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, dict]:
    """(images, targets, labels, manifest) of any distilled run: a self-supervised one has targets
    (pre-trained by MSE), a supervised one (random, DM, E2D, ...) labels (pre-trained by cross-entropy)."""
    art = load_artifact(run)
    if art.manifest.get("self_supervised"):
        if art.targets is None:
            raise TinysetError(f"{run}: a self-supervised run without targets; re-distil it")
        return art.images, art.targets, None, art.manifest
    if art.labels is None:
        raise TinysetError(f"{run} (made by {art.manifest.get('method')}) holds neither targets nor labels; transfer cannot pre-train on it")
    if art.images.dim() != 4:
        raise TinysetError(f"{run} holds vectors, not images; transfer needs images")
    return art.images, None, art.labels, art.manifest


def transfer_run(run: str | Path, target: str, cfg: RunConfig, overrides: list[dict] | None = None,
                 baselines: bool = True, progress: bool = True) -> str:
    """``tinyset eval RUN --transfer TARGET[,TARGET...]``: the run's set, the no-pre-training network
    and (with ``baselines``) a random real subset under one protocol: for a self-supervised run the
    subset has the run's storage and the teacher's features as targets, and the teacher's own linear
    probe is a row too; for a supervised run (random, DM, E2D, ...) the subset has as many labelled
    images and both pre-train by cross-entropy. Each set is pre-trained once per seed for every
    target. Writes ``transfer-<target>.json`` and ``.md`` in the run per target, returns the tables."""
    import json

    from ..config import DataConfig, apply_mapping
    from ..eval.transfer import (TransferConfig, TransferTarget, evaluate_transfer_targets, markdown, prepare_targets,
                                 probe_encoder)
    from ..methods.krr_st import features_of, krr_st_size
    from ..utils.files import atomic_write_text

    run = Path(run)
    x, y, labels, manifest = load_pretrain_set(run)
    ssl = labels is None
    tcfg = TransferConfig(seeds=cfg.eval.seeds)
    for o in overrides or []:
        apply_mapping(tcfg, o)
    device = resolve_device(cfg.device)
    src = load_dataset(cfg.data.dataset, cfg.data)
    if recorded_identity(manifest) != src.info.identity:  # one dataset under two path spellings is one
        raise TinysetError(f"run {run} was distilled from {manifest.get('dataset')}, not {src.info.name}")
    names = [t.strip() for t in target.split(",") if t.strip()]
    if not names:
        raise TinysetError("--transfer needs a target dataset")
    tlist = [TransferTarget(t, load_dataset(t, DataConfig(dataset=t, data_root=cfg.data.data_root,
                                                          image_size=src.info.image_size))) for t in names]
    prep = prepare_targets(tlist, src.info, tcfg)
    rows: dict[str, dict] = {t: {} for t in names}

    def add(label: str, reps: dict) -> None:
        for t, rep in reps.items():
            rows[t][label] = rep

    add(manifest["method"], evaluate_transfer_targets(x, y, src.info, tlist, tcfg, device, cfg.seed, progress,
                                                      labels=labels, prepared=prep))
    if baselines:
        add("no_pretrain", evaluate_transfer_targets(None, None, src.info, tlist, tcfg, device, cfg.seed, progress, prepared=prep))
        g = generator(derive_seed(cfg.seed, "transfer-random"))
        if ssl:
            teacher = get_ssl_teacher(src, SSLConfig(checkpoint=manifest["teacher"]["path"], cache_dir=cfg.teacher.cache_dir), device)
            m = krr_st_size(manifest["stored_floats"], src.info.shape, teacher.dim)
            xr = src.train.get_batch(torch.randperm(len(src.train), generator=g)[:m])[0]
            yr = features_of(teacher.encoder, xr, (0,), device)[0]
            add(f"random ({m} images)", evaluate_transfer_targets(xr, yr, src.info, tlist, tcfg, device, cfg.seed, progress,
                                                                  prepared=prep))
            add("SSL teacher (frozen, linear probe)", probe_encoder(teacher.encoder, tlist, src.info, tcfg, device, cfg.seed,
                                                                    prepared=prep))
        else:
            m = len(x)
            xr, yr = src.train.get_batch(torch.randperm(len(src.train), generator=g)[:m])
            add(f"random ({m} labelled images)", evaluate_transfer_targets(xr, None, src.info, tlist, tcfg, device, cfg.seed,
                                                                           progress, labels=yr, prepared=prep))
    tables = []
    for t, tds in zip(names, tlist):
        report = {"run": str(run), "target": tds.dataset.info.name, "config": to_dict(tcfg), "rows": rows[t],
                  "stored_floats": manifest.get("stored_floats"), "pretrain": "mse to targets" if ssl else "cross-entropy on labels"}
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in t)
        atomic_write_text(run / f"transfer-{safe}.json", json.dumps(report, indent=2, default=str))
        floats = f", {manifest['stored_floats']} floats" if manifest.get("stored_floats") else ""
        table = markdown(report, f"transfer of {run.name} ({manifest['method']}{floats}) to {tds.dataset.info.name}")
        atomic_write_text(run / f"transfer-{safe}.md", table)
        tables.append(table)
    return "\n".join(tables)
