"""The main job, end to end: dataset -> teacher -> method -> artifact -> evaluation.

Finished units are cached in a hidden ``.<out>.partial`` folder beside the output, keyed by the
resolved config, so an interrupted run resumes where it stopped and produces the same set; the
artifact itself is written to a temp folder and renamed (see ``artifact.save_artifact``)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..artifact import load_artifact, save_artifact, save_quantized_set, teacher_bytes
from ..quant.inloop import encoded_from_tensors, encoded_to_tensors, merge_encoded
from ..config import RunConfig, describe_protocol, save_yaml, to_dict
from ..data import load_dataset
from ..data.base import Dataset, recorded_identity
from ..errors import TinysetError
from ..eval.protocol import evaluate_set, markdown_table
from ..methods import METHODS, MethodContext, build_method
from ..teachers.supervised import Teacher, get_extra_teachers, get_teacher, teacher_source
from .. import distributed as dist
from ..utils.digest import json_digest
from ..utils.files import atomic_path, atomic_write_text, no_litter
from ..utils.progress import progress_bar
from ..utils.runlog import JsonlLog, resolve_device, versions
from ..utils.seeding import derive_seed, generator
from .result import DistillResult
from .validate import check_against_dataset, check_config

log = logging.getLogger(__name__)


def needs_teacher(cfg: RunConfig) -> bool:
    soft_eval = cfg.evaluate and "soft" in cfg.eval.label_modes
    return METHODS.get(cfg.method).needs_teacher or soft_eval


def _config_hash(cfg: RunConfig) -> str:
    d = to_dict(cfg)
    d.pop("evaluate", None)
    d.pop("eval", None)  # evaluation settings do not change the images
    d.pop("device", None)
    return json_digest(d)


def synthesize(
    cfg: RunConfig, ds: Dataset, teacher: Teacher | None, partial: Path | None, progress: bool = True,
    runlog: JsonlLog | None = None, classes: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Run the method over its units (resuming cached ones) and return images/labels, class-major.

    Under torchrun each rank runs its round-robin share of the units and stores them in ``partial``;
    rank 0 returns the whole set, the other ranks ``(None, None, {})``."""
    device = resolve_device(cfg.device)
    runlog = runlog or JsonlLog(None)
    ctx = MethodContext(
        dataset=ds, teacher=teacher.model if teacher else None, device=device, channels_last=cfg.channels_last,
        amp=cfg.amp, runlog=runlog, progress=progress, cache_dir=teacher.directory if teacher else None,
    )
    if teacher is not None and cfg.teacher.extra:
        extra = get_extra_teachers(ds, cfg.teacher, device, progress)
        ctx.teachers, ctx.teacher_dirs = [t.model for t in extra], [t.directory for t in extra]
    method = build_method(cfg.method, cfg.method_args, ctx)
    units = method.plan(cfg.ipc, classes)
    distributed = dist.is_distributed()
    if distributed and partial is None:
        raise TinysetError("a distributed synthesis exchanges units through the partial folder; give one")
    mine = dist.shard(units)  # all units in a single process
    t0 = time.perf_counter()
    done: dict[str, tuple[torch.Tensor, torch.Tensor, dict, dict | None]] = {}
    for unit in progress_bar(mine, desc=f"{cfg.method} units", disable=not progress or len(mine) < 2, leave=False):
        done[unit.key] = _unit(method, unit, cfg, partial)  # (x, y, stats, in-loop encoding or None)
    seconds = time.perf_counter() - t0
    counter = ctx.counter.as_dict()
    if distributed:
        # every unit is on disk once all ranks pass the barrier; rank 0 reads the others' units
        dist.barrier()
        gathered = dist.all_gather_objects({"stats": {k: v[2] for k, v in done.items()}, "counter": counter, "seconds": seconds})
        stats = {k: st for g in gathered for k, st in g["stats"].items()}
        counter = {k: sum(g["counter"][k] for g in gathered) for k in counter}
        seconds = max(g["seconds"] for g in gathered)
        if not dist.is_main_process():
            return None, None, {}
        for unit in units:
            if unit.key not in done:
                x, y, _, enc = _load_unit(_unit_path(partial, unit))
                done[unit.key] = (x, y, stats[unit.key], enc)
    images, labels, slots, unit_stats, encoded = [], [], [], [], []
    for unit in units:
        x, y, st, enc = done[unit.key]
        encoded.append(enc)
        images.append(x)
        labels.append(y)
        slots.append(torch.arange(unit.start, unit.stop).repeat(len(unit.classes)))
        unit_stats.append({"unit": unit.short_key, **{k: v for k, v in st.items() if k not in ("source_indices", "unit_classes", "unit_slots")}})
    x, y, s = torch.cat(images), torch.cat(labels), torch.cat(slots)
    order = torch.argsort(y * (cfg.ipc + 1) + s, stable=True)  # class-major, then slot
    summary = {"seconds": seconds, "units": unit_stats, **counter, "method_config": method.resolved_config()}
    if distributed:
        summary["world_size"] = dist.get_world_size()
    if any(e is not None for e in encoded):  # quantizer in the loop: the set is stored as codes
        if not all(e is not None for e in encoded):
            raise TinysetError(f"method {cfg.method} quantized some units but not others")
        summary["_quantized"] = merge_encoded(encoded, order, y[order], ds.info.num_classes)
    for key in ("iterations_run", "iterations_saved", "class_stats_seconds"):
        vals = [u[key] for u in unit_stats if isinstance(u.get(key), (int, float))]
        if vals:
            summary[key] = sum(vals)
    return x[order], y[order], summary


def _unit_path(partial: Path, unit) -> Path:
    # a short name (class range or hash): the full key lists every class and overflows file-name
    # limits at 100+ classes per unit; the full class list is inside the stats sidecar
    return partial / f"unit_{unit.short_key}.safetensors"


def _load_unit(cached: Path) -> tuple[torch.Tensor, torch.Tensor, dict, dict | None]:
    t = load_file(str(cached))
    st = json.loads(cached.with_suffix(".json").read_text())
    enc = encoded_from_tensors(t, st.pop("encoded")) if "encoded" in st else None
    return t["images"], t["labels"], st, enc


def _unit(method, unit, cfg: RunConfig, partial: Path | None) -> tuple[torch.Tensor, torch.Tensor, dict, dict | None]:
    """One unit: read from the partial folder if finished, else run and store it. The stats file is
    written first and the tensors file last, each by temp file + rename, so the tensors file is
    the commit mark: present means complete, and a run killed mid-write leaves only a temp file."""
    cached = _unit_path(partial, unit) if partial else None
    if cached and cached.exists() and cached.with_suffix(".json").exists():
        x, y, st, enc = _load_unit(cached)
        if st.get("unit_classes") == list(unit.classes) and st.get("unit_slots") == [unit.start, unit.stop]:
            return x, y, {**st, "resumed": True}, enc
        # else a hash collision or a foreign file: recompute
    res = method.run_unit(unit, generator(derive_seed(cfg.seed, cfg.method, unit.key)))
    x, y, st, enc = res.images.float().contiguous(), res.labels.long(), res.stats, res.encoded
    if x.shape[0] != len(unit.classes) * unit.per_class or not torch.isfinite(x).all():
        raise TinysetError(f"method {cfg.method} returned a bad unit {unit.short_key}: shape {tuple(x.shape)}, finite={bool(torch.isfinite(x).all())}")
    st = {**st, "unit_classes": list(unit.classes), "unit_slots": [unit.start, unit.stop]}
    if cached:
        # a quantizer in the loop: its codes and state travel with the unit (json meta + tensors)
        enc_t, enc_meta = encoded_to_tensors(enc) if enc is not None else ({}, None)
        atomic_write_text(cached.with_suffix(".json"), json.dumps({**st, **({"encoded": enc_meta} if enc else {})}, default=str))
        with atomic_path(cached) as tmp:
            save_file({"images": x, "labels": y, **enc_t}, str(tmp))
    return x, y, st, enc


def distill(cfg: RunConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> DistillResult:
    out = Path(out)
    if out.exists() and not overwrite:
        raise TinysetError(f"output {out} already exists; pass --overwrite or choose another --out")
    # Every name, type and range is checked before anything is trained or written.
    check_config(cfg)
    if getattr(METHODS.get(cfg.method), "self_supervised", False):
        from .distill_ssl import distill_ssl  # whole-set, label-free methods (krr_st, ssdd)

        return distill_ssl(cfg, out, overwrite, progress)
    ds = load_dataset(cfg.data.dataset, cfg.data)
    check_against_dataset(cfg, ds)
    device = resolve_device(cfg.device)
    partial = out.parent / f".{out.name}.partial"
    # a run that fails before finishing a unit leaves no hidden .partial folder (nor its parents)
    with no_litter(partial, lambda p: any(p.glob("unit_*.safetensors"))):
        return _distill(cfg, out, ds, device, partial, overwrite, progress)


def _distill(cfg: RunConfig, out: Path, ds: Dataset, device, partial: Path, overwrite: bool, progress: bool) -> DistillResult:
    if dist.is_main_process():  # one rank prepares the shared folder, the others wait for it
        _prepare_partial(partial, _config_hash(cfg))
    dist.barrier()
    runlog = JsonlLog(partial / "log.jsonl")
    runlog.write("start", config=to_dict(cfg))
    teacher = get_teacher(ds, cfg.teacher, device, progress, runlog, cfg.data.num_workers) if needs_teacher(cfg) else None
    t0 = time.perf_counter()
    x, y, summary = synthesize(cfg, ds, teacher, partial, progress, runlog)
    wall = time.perf_counter() - t0
    if dist.is_main_process():
        _write_run(out, cfg, ds, teacher, x, y, summary, wall, device, partial, overwrite)
    dist.barrier()  # the artifact exists for every rank from here on
    report = None
    if cfg.evaluate:
        report = evaluate_run(out, cfg, ds, teacher, progress)
    return DistillResult(out, load_artifact(out, verify=False).manifest, report)


def _prepare_partial(partial: Path, chash: str) -> None:
    hash_file = partial / "config_hash"
    if partial.exists() and (not hash_file.exists() or hash_file.read_text().strip() != chash):
        log.info("discarding stale partial results in %s (config changed)", partial)
        shutil.rmtree(partial)
    elif partial.exists():
        log.info("resuming from finished units in %s", partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_text(hash_file, chash)


def _write_run(out: Path, cfg: RunConfig, ds: Dataset, teacher: Teacher | None, x: torch.Tensor, y: torch.Tensor,
               summary: dict, wall: float, device, partial: Path, overwrite: bool) -> None:
    """The artifact, config.yaml and log.jsonl; then the partial folder goes."""
    info = ds.info
    manifest = {
        "dataset": info.name,
        "dataset_info": info.to_dict(),
        "class_names": list(info.class_names),
        "class_to_idx": {n: i for i, n in enumerate(info.class_names)},
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "image_shape": list(info.shape),
        "ipc": cfg.ipc,
        "method": cfg.method,
        "method_config": summary.pop("method_config"),
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "teacher": teacher.reference if teacher else None,
        # what a student needs besides the set: the online teacher (counted) when it labels the set
        **({"teacher_bytes": teacher_bytes(teacher.model)} if teacher is not None else {}),
        "label_mode": "teacher" if teacher is not None and "soft" in cfg.eval.label_modes else "hard",
        "wall_time_seconds": wall,
        "synthesis": summary,
        "versions": versions(),
        "device": str(device),
        # images are bit-identical only for the same thread count (float reduction order)
        "torch_threads": torch.get_num_threads(),
    }
    quantized = summary.pop("_quantized", None)
    if quantized is None:
        save_artifact(out, {"images": x, "labels": y}, manifest, preview=x if info.kind == "image" else None,
                      preview_labels=y, class_names=list(info.class_names), overwrite=overwrite)
    else:
        save_quantized_set(out, quantized, manifest, x, y, class_names=list(info.class_names), overwrite=overwrite)
    save_yaml(to_dict(cfg), out / "config.yaml")
    shutil.copy(partial / "log.jsonl", out / "log.jsonl")
    if (partial / "tensorboard").is_dir():
        shutil.copytree(partial / "tensorboard", out / "tensorboard", dirs_exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)


def protocol_key(cfg: RunConfig, teacher: Teacher | None) -> str:
    """One evaluation result per protocol: the hash of the resolved eval config, seed and teacher."""
    ident = {"eval": to_dict(cfg.eval), "seed": cfg.seed, "teacher": (teacher.reference or {}).get("sha256") if teacher else None}
    return json_digest(ident, 12)


def protocol_title(cfg: RunConfig) -> str:
    """Names everything that changes the numbers, so two tables are never confused."""
    e = cfg.eval
    labels = "/".join(e.label_modes)
    loss = f"{e.loss} T={e.temperature:g}" if "soft" in e.label_modes else "ce"
    view = {"rrc": f"crop [{e.crop_scale[0]:g}, {e.crop_scale[1]:g}]", "shift": f"pad-{e.shift_pad} crop"}.get(e.augment, e.augment)
    mix = ", ".join(f"{k} {v:g}" for k, v in (("cutmix", e.cutmix), ("mixup", e.mixup)) if v) or "no mixing"
    return (f"protocol {describe_protocol(e)}: student {e.student}, {e.epochs} epochs, {e.optimizer} lr {e.lr:g} "
            f"{e.schedule}, labels {labels}, loss {loss}, {view}, {mix}, "
            f"EMA {e.ema if e.ema is not None else 'off'}, HE-DA {e.he_da if e.he_da is not None else 'off'}, {e.seeds} seed(s)")


def evaluate_run(path: str | Path, cfg: RunConfig, ds: Dataset | None = None, teacher: Teacher | None = None,
                 progress: bool = True, train_teacher: bool = True) -> dict:
    """Evaluate an artifact directory and record the result beside it.

    ``eval.json`` keeps one result per protocol under ``protocols`` (keyed by ``protocol_key``), so
    evaluating again with other settings adds a result instead of overwriting; its top level is the
    latest result. ``eval.md`` holds one table per protocol, each titled with its protocol.

    The teacher it will use, and how it gets it, is logged before anything runs; with
    ``train_teacher=False`` a teacher that would have to be trained (or resumed) is refused."""
    check_config(cfg, synthesis=False, evaluation=True)
    art = load_artifact(path)
    if ds is None:
        ds = load_dataset(cfg.data.dataset, cfg.data)
        check_against_dataset(cfg, ds, synthesis=False, evaluation=True)
    if recorded_identity(art.manifest) != ds.info.identity:  # one dataset under two path spellings is one
        raise TinysetError(f"artifact {path} was distilled from {art.manifest.get('dataset')}, not {ds.info.name}")
    device = resolve_device(cfg.device)
    if teacher is None and "soft" in cfg.eval.label_modes:
        kind, line = teacher_source(ds, cfg.teacher)
        log.info("evaluation teacher: %s", line)
        if kind in ("train", "resume") and not train_teacher:
            raise TinysetError(f"the soft labels need a teacher that is {line.split(':')[0]}: {cfg.teacher.model} on "
                               f"{ds.info.name}, {cfg.teacher.epochs} epochs (minutes to hours on a CPU); pass --teacher "
                               "CHECKPOINT (or import with --teacher), or --train-teacher to train it")
        teacher = get_teacher(ds, cfg.teacher, device, progress)
    runlog = JsonlLog(Path(path) / "log.jsonl")
    t0 = time.perf_counter()
    resynth = None
    if getattr(cfg.eval, "synthesis_seeds", False):
        def resynth(run_seed: int):
            # the same config with another run seed, synthesised in memory (no artifact)
            other = dataclasses.replace(cfg, seed=run_seed)
            x, y, _ = synthesize(other, ds, teacher if needs_teacher(cfg) else None, None, progress, runlog)
            return x, y
    report = evaluate_set(art.images, art.labels, ds, teacher.model if teacher else None, cfg.eval, device,
                          seed=cfg.seed, channels_last=cfg.channels_last, amp=cfg.amp, runlog=runlog, progress=progress,
                          resynthesize=resynth, soft_labels=art.soft_labels, soft_config=art.manifest.get("soft_labels"))
    report["bytes"] = eval_bytes(art, cfg.eval.label_modes, teacher)
    key = protocol_key(cfg, teacher)
    title = f"{art.manifest.get('method')} on {ds.info.name}, IPC {art.manifest.get('ipc')}: {protocol_title(cfg)}"
    report.update({"artifact": str(path), "method": art.manifest.get("method"), "ipc": art.manifest.get("ipc"),
                   "dataset": ds.info.name, "teacher": teacher.reference if teacher else None,
                   "seconds": time.perf_counter() - t0, "versions": versions(), "protocol_key": key, "title": title,
                   "class_names": list(ds.info.class_names)})
    if dist.is_main_process():  # evaluate_set gathered every rank's students; one rank writes
        previous = _read_eval(Path(path) / "eval.json")
        protocols = {**previous.get("protocols", {}), key: {k: v for k, v in report.items() if k != "protocols"}}
        atomic_write_text(Path(path) / "eval.json", json.dumps({**report, "protocols": protocols}, indent=2, default=str))
        tables = [markdown_table(r, r.get("title", "")) for r in protocols.values()]
        atomic_write_text(Path(path) / "eval.md", "\n".join(tables))
    dist.barrier()  # eval.json exists for every rank from here on
    return report


def eval_bytes(art, label_modes, teacher: Teacher | None = None) -> dict:
    """``set_bytes`` and, per evaluated label mode, ``student_bytes`` (soft = the online teacher,
    counted at its stored precision; stored = the soft-labels file; hard = the set alone)."""
    known = dict(art.manifest.get("label_bytes") or {"hard": 0})
    if "teacher" not in known and teacher is not None:
        known["teacher"] = teacher_bytes(teacher.model)["bytes"]
    student = {}
    for mode in label_modes:
        key = "teacher" if mode == "soft" else mode
        if key in known:
            student[mode] = art.set_bytes + int(known[key])
    return {"set_bytes": art.set_bytes, "student_bytes": student}


def _read_eval(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; starting a new one", path)
        return {}
    if "protocols" not in data and "rows" in data:  # written before results were keyed by protocol
        data = {"protocols": {data.get("protocol", "earlier"): data}}
    return data
