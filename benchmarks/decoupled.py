"""Decoupled distillation side by side: random, E2D and its ablations, RDED and SRe2L on one cached
teacher, the same student protocol for all rows, last-epoch accuracy. One script, dataset as a
parameter, three profiles picked by resolution:

- small (<= 32 px, e.g. CIFAR-10): ConvNet-3 teacher (10 epochs, pinned) and student; rows random,
  rded, e2d, herding, sre2l (its CIFAR recipe); more rows with --rows;
- medium (<= 64 px, e.g. Imagenette at 64 px): ConvNet-4 teacher (width 128, 30 epochs, pinned),
  ConvNet-4 width-64 student (CPU time; --student convnet4 for the teacher's width); rows random,
  rded (2x2 tiles), e2d, e2d_reference, sre2l, e2d_no_memory, e2d_noise_init, rded_untiled (one
  crop per image: what the tiling costs a 64-px student);
- large (> 64 px, e.g. Imagenette at 128 px): ConvNet-5 teacher (30 epochs) and student, as the
  128-px distillation tables use; rows random, e2d, rded (tiled), sre2l (its ImageNet recipe),
  e2d_no_memory, e2d_noise_init.

Students train under a named evaluation protocol (--protocol, default rded; `tinyset protocols`).

Every seed re-synthesises: seed s synthesises the set with run seed s and trains the student with
eval seed s (paired), so every row's std holds synthesis and training variance, like the random
subset's (redrawn per seed).

    python benchmarks/decoupled.py --data-root ../shared/data --max-minutes 80                   # CIFAR-10
    python benchmarks/decoupled.py --dataset imagenette --image-size 64 --data-root ../shared/data  # 64 px
    python benchmarks/decoupled.py --dataset imagenette --data-root ../shared/data --device cuda  # 128 px

Rows are written as they finish, seeds inside a row are kept in work/, so a rerun resumes; rows
already in results/<name>.json are skipped. The command that reproduces the file is printed at
start and written into it. E2D rows also record the crop memory's occupancy over the run (a PNG per
IPC) and the iterations the early stop saved."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common import (CLAIM_SEEDS, RESULTS, WORK, Deadline, Rows, add_max_minutes, bare_throughput, claim_line,
                    command_line, two_pooled_std)
from imagefolder_io import warm_rate, with_cache
from pinned import PINNED, load_pinned
from tinyset.artifact import load_artifact
from tinyset.config import DataConfig, RunConfig, TeacherConfig, build_config, describe_protocol, to_dict
from tinyset.data import load_dataset
from tinyset.data.imagefolder import FileSplit
from tinyset.eval.protocol import synthesis_seed, train_student
from tinyset.methods.diagnostics import template_score
from tinyset.jobs.distill import distill
from tinyset.teachers.supervised import get_teacher
from tinyset.utils.seeding import derive_seed

HERE = Path(__file__).parent
log = logging.getLogger("benchmarks.decoupled")

# name -> (method, method_args). A profile says which run by default, in its order.
ROWS = {
    "random": ("random", {}),
    "e2d": ("e2d", {}),
    "rded": ("rded", {}),
    "e2d_old_targets": ("e2d", {"bn_targets": "teacher"}),
    "sre2l": ("sre2l", {}),
    "e2d_solved_ce": ("e2d", {"solved_ce": 0.1}),
    "e2d_lr_0.025": ("e2d", {"lr": 0.025}),
    # e2d once more, for rows added after the teacher was retrained (a lost cache, a new machine):
    # the same-teacher control they are compared with (each row records its teacher's accuracy)
    "e2d_rerun": ("e2d", {}),
    "sre2l_old_targets": ("sre2l", {"bn_targets": "teacher"}),
    "e2d_no_memory": ("e2d", {"memory": False}),
    "e2d_noise_init": ("e2d", {"init": "noise"}),
    "herding": ("herding", {}),
    # the reference recovery structure (conv-input + patch statistics, pooled class targets from crop
    # 0.08-1 views, persistent EMA, 2 classes x 10 slots, per-slot init with flips): methods/e2d.py
    "e2d_reference": ("e2d", {"stats": "reference"}),
    # RDED keeps whole crops at 64 px instead of tiling 2x2 of them (the reference tiles from 64 px
    # up, as on Tiny-ImageNet): says whether the tiling is what a 64-px student pays for
    "rded_untiled": ("rded", {"factor": 1}),
    # e2d_reference one part at a time (tinyset's e2d plus that part), to find which part moves it:
    # Conv2d-input + patch statistics; the crop-view targets pooled over the batch's labels; 2-class
    # units of 20 with a persistent EMA; per-slot starts with repeats and flips
    "e2d_ref_conv_stats": ("e2d", {"match_conv": True}),
    "e2d_ref_targets": ("e2d", {"bn_targets": "crop", "class_target": "pooled"}),
    "e2d_ref_units": ("e2d", {"classes_per_batch": 2, "batch_size": 20, "stats_ema_persist": True}),
    "e2d_ref_init": ("e2d", {"init_sampling": "independent", "init_flip": True}),
}

# (claim, row a, row b, kind), answered per IPC by whichever of the two rows ran (common.claim_line):
# E2D's paper ordering, the baselines' own claim over a random subset, what E2D's parts buy, and the
# rows that explain RDED at 64 px
CLAIMS = [
    ("E2D beats the random real subset", "e2d", "random", "beats"),
    ("E2D beats RDED", "e2d", "rded", "beats"),
    ("E2D beats SRe2L", "e2d", "sre2l", "beats"),
    ("RDED beats the random real subset", "rded", "random", "beats"),
    ("herding beats the random real subset", "herding", "random", "beats"),
    ("the crop memory helps (e2d beats e2d_no_memory)", "e2d", "e2d_no_memory", "beats"),
    ("a real-image start helps (e2d beats e2d_noise_init)", "e2d", "e2d_noise_init", "beats"),
    ("tinyset's E2D against the reference recovery structure (decides the default)", "e2d", "e2d_reference", "differs"),
    ("RDED's 2x2 tiling costs accuracy (rded_untiled beats rded)", "rded_untiled", "rded", "beats"),
]
SPEEDUP_CLAIM = 10.0  # E2D's paper: at least this many times less synthesis time than SRe2L
SAVED_CLAIM = 30.0  # the crop memory's early stop saves at least this share of the iterations (%)


def findings(rows: list[dict]) -> list[str]:
    """Each claim the table's rows can answer, per IPC (two pooled std, 5 paired seeds)."""
    out = []
    groups: dict[tuple, dict[str, dict]] = {}  # only rows of one IPC, protocol and student are compared
    for r in rows:
        groups.setdefault((r["ipc"], r.get("protocol") or "", r.get("student") or ""), {})[r["method"]] = r
    several = len({key[1:] for key in groups}) > 1  # name protocol and student only where they differ
    for (ipc, proto, student), by in sorted(groups.items()):
        tag = f"IPC {ipc}, " + (f"{proto}, {student}, " if several else "")
        out += [tag + claim_line(text, by[a], by[b], kind) for text, a, b, kind in CLAIMS if a in by and b in by]
        e2d, sre2l = by.get("e2d"), by.get("sre2l")
        if e2d and sre2l and e2d["synthesis_seconds"] > 0:
            ratio = sre2l["synthesis_seconds"] / e2d["synthesis_seconds"]
            once = (sre2l["synthesis_seconds"] + sre2l.get("bn_stats_seconds", 0.0)) / (
                e2d["synthesis_seconds"] + e2d.get("bn_stats_seconds", 0.0))
            passes = (sre2l["teacher_backward_images"] / e2d["teacher_backward_images"]
                      if e2d.get("teacher_backward_images") else None)
            matches = e2d["accuracy_mean"] - sre2l["accuracy_mean"] >= -two_pooled_std(e2d, sre2l)
            ok = ratio >= SPEEDUP_CLAIM and matches and min(e2d["seeds"], sre2l["seeds"]) >= CLAIM_SEEDS
            out.append(
                f"{tag}claim: E2D synthesises at least {SPEEDUP_CLAIM:g}x faster than SRe2L at equal or better "
                f"accuracy: **{'holds' if ok else 'does not hold'}** ({ratio:.1f}x per seed, "
                f"{e2d['synthesis_seconds']:.0f} s vs {sre2l['synthesis_seconds']:.0f} s; {once:.1f}x with each "
                f"method's one-off statistics pass"
                + (f"; {passes:.1f}x fewer teacher forward+backward images" if passes else "")
                + f"; accuracy {'not below' if matches else 'below'} SRe2L's by more than 2 pooled std)")
        if e2d and e2d.get("iterations_saved_pct") is not None:
            saved = e2d["iterations_saved_pct"]
            out.append(f"{tag}claim: E2D's early stop saves at least {SAVED_CLAIM:g}% of the iterations: "
                       f"**{'holds' if saved >= SAVED_CLAIM else 'does not hold'}** ({saved:.1f}% saved, mean over "
                       f"{e2d['seeds']} seeds)")
    return out


def slug(text: str) -> str:
    """A folder-name-safe form of a protocol or model name."""
    return "".join(c if c.isalnum() else "_" for c in text)


@dataclass(frozen=True)
class Profile:
    model: str  # teacher (and student, unless ``student`` says otherwise)
    teacher_epochs: int
    teacher_batch: int
    epochs: int  # student epochs
    rows: tuple[str, ...]
    about: str
    student: str | None = None
    student_why: str = ""


PROFILES = {
    "small": Profile("convnet3", 10, 128, 300,
                     ("random", "rded", "e2d", "herding", "sre2l"),
                     "ConvNet-3 (width 128, BatchNorm)"),
    "medium": Profile("convnet4", 30, 64, 300,
                      ("random", "rded", "e2d", "e2d_reference", "sre2l", "e2d_no_memory", "e2d_noise_init",
                       "rded_untiled"),
                      "ConvNet-4 (width 128, BatchNorm)", "convnet:depth=4,width=64",
                      "width 64 for CPU time: a student step costs about half the width-128 one's here (1.06 vs "
                      "2.19 s per 50 images at 64 px, teacher forward included), ~35 student trainings per table"),
    "large": Profile("convnet5", 30, 64, 300,
                     ("random", "e2d", "rded", "sre2l", "e2d_no_memory", "e2d_noise_init"),
                     "ConvNet-5 (width 128, BatchNorm; the 128-px distillation tables' network)"),
}
SHORTHANDS = {"imagenette": ("imagenette-128", 128)}  # --dataset NAME -> imagefolder:<data-root>/<folder> at px
DEFAULT_PINNED = {("cifar10", 32): "cifar10-convnet3", ("imagenette", 64): "imagenette64-convnet4"}  # (short, px) -> pinned


def resolve_dataset(name: str, data_root: str, image_size: int | None) -> tuple[str, str, int | None]:
    """(dataset spec, short name for files, image size)."""
    if name in SHORTHANDS:
        folder, px = SHORTHANDS[name]
        return f"imagefolder:{Path(data_root) / folder}", name, image_size or px
    short = Path(name.split(":", 1)[-1]).name if ":" in name else name
    return name, short, image_size


def loader_throughput(ds, n: int = 256) -> dict | None:
    """Images/s of the image-folder path: decoding the files (decode cache off) against reading the
    decoded uint8 cache the teacher's epochs filled. None for in-memory datasets."""
    if not isinstance(ds.train, FileSplit):
        return None
    idx = torch.linspace(0, len(ds.train) - 1, min(n, len(ds.train))).long()
    return {"decode_img_per_s": round(warm_rate(with_cache(ds.train, "off"), idx), 1),
            "cached_img_per_s": round(warm_rate(ds.train, idx), 1), "images": len(idx)}


def pad_reduce(curves: list[list[float]], reduce) -> list[float]:
    """Per step, ``reduce`` over curves of different lengths (a curve that ended early counts 0:
    a unit or seed whose E2D stopped holds no crops)."""
    curves = [c for c in curves if c]
    n = max((len(c) for c in curves), default=0)
    return [float(reduce([c[i] if i < len(c) else 0.0 for c in curves])) for i in range(n)]


def measured_throughput(name: str, render_only: bool, bare_fn, loader_fn) -> tuple[float, dict | None, dict]:
    """The notes' bare-teacher and image-folder speeds: measured now, except when ``--max-minutes 0`` only
    re-renders a table: then the speeds its rows' run measured (kept in the json) stay, because a re-render
    on a busy machine would print another job's share of the cores as this table's."""
    path = RESULTS / f"{name}.json"
    kept = json.loads(path.read_text()).get("measured") if path.exists() else None
    if render_only and kept:
        return kept["bare_img_per_s"], kept.get("loader"), kept
    bare, loader = bare_fn(), loader_fn()
    return bare, loader, {"bare_img_per_s": bare, "loader": loader}


def plot_memory(rows: list[dict], path: Path, title: str) -> Path | None:
    """One line per E2D row: the crop memory's occupancy over the run (mean over seeds)."""
    curves = [(r["method"], r["memory_occupancy"]) for r in rows if r.get("memory_occupancy")]
    if not curves:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=120)
    for name, c in curves:
        ax.plot(range(1, len(c) + 1), c, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("crops in memory (all images)")
    ax.set_title(textwrap.fill(title, 70), fontsize=9)  # a long dataset name wraps instead of leaving the figure
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--dataset", default="cifar10",
                   help="a registry name, npz:/imagefolder: spec, or 'imagenette' (= imagefolder:<data-root>/imagenette-128 at 128 px)")
    p.add_argument("--image-size", type=int, default=None, help="imagefolder resolution (default: the shorthand's, else 224)")
    p.add_argument("--profile", choices=list(PROFILES), default=None,
                   help="default: small at <= 32 px, medium at <= 64 px (Imagenette-64), large above")
    p.add_argument("--ipc", type=int, nargs="+", default=[10])
    p.add_argument("--seeds", type=int, default=5, help="paired synthesis+eval seeds per row")
    p.add_argument("--epochs", type=int, default=None, help="student epochs (default: the protocol's)")
    p.add_argument("--protocol", default="rded", help="student evaluation protocol (`tinyset protocols`)")
    p.add_argument("--pinned-teacher", default=None, choices=list(PINNED),
                   help="committed teacher (default: the dataset's pinned one, if any; else trained and cached)")
    p.add_argument("--retrain-teacher", action="store_true", help="retrain the pinned teacher and check it is within a point")
    add_max_minutes(p)
    p.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), help="rows, in this order (default: the profile's)")
    p.add_argument("--teacher", default=None, help="teacher and student model (default: the profile's)")
    p.add_argument("--student", default=None, help="student model (default: the profile's, else the teacher's)")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--iterations", type=int, default=None, help="override E2D/SRe2L iterations (smoke runs only)")
    p.add_argument("--cache", default=str(HERE / "cache"), help="teacher cache (the teacher and its BN statistics)")
    p.add_argument("--results", default=None, help="results name (default: decoupled_<dataset>)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast and channels_last on CUDA)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for teacher training on file datasets")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cmd = command_line()
    print(f"reproduce with: {cmd}", flush=True)

    spec, short, size = resolve_dataset(args.dataset, args.data_root, args.image_size)
    data = DataConfig(dataset=spec, data_root=args.data_root, image_size=size, num_workers=args.workers)
    ds = load_dataset(spec, data)
    px = ds.info.shape[-1]
    prof = PROFILES[args.profile or ("small" if px <= 32 else "medium" if px <= 64 else "large")]
    model = args.teacher or prof.model
    student = args.student or (None if args.teacher else prof.student) or model
    row_names = args.rows or list(prof.rows)
    amp = args.device.startswith("cuda")
    deadline = Deadline(args.max_minutes)
    pinned = args.pinned_teacher or DEFAULT_PINNED.get((short, px))
    tcfg = TeacherConfig(model=model, epochs=args.teacher_epochs or prof.teacher_epochs, batch_size=prof.teacher_batch,
                         cache_dir=args.cache)
    t0 = time.perf_counter()
    if pinned and not args.teacher and not args.teacher_epochs:
        teacher = load_pinned(pinned, ds, args.device, retrain=args.retrain_teacher, cache=args.cache)
        tcfg = dataclasses.replace(tcfg, checkpoint=teacher.reference["path"])  # every row's synthesis uses it
    else:  # a teacher of its own (--teacher / --teacher-epochs): its rows and set folders must not claim the pinned one
        pinned = None
        teacher = get_teacher(ds, tcfg, args.device, progress=False, num_workers=args.workers)
    teacher_secs = time.perf_counter() - t0
    ecfg = build_config(RunConfig, None, [f"eval.protocol={args.protocol}", f"eval.student={student}", "eval.seeds=1",
                                          "eval.random_baseline=false"]
                        + ([f"eval.epochs={args.epochs}"] if args.epochs else [])).eval
    epochs = ecfg.epochs
    sized = short + (str(px) if short in SHORTHANDS and px != SHORTHANDS[short][1] else "")  # imagenette64
    results_name = args.results or f"decoupled_{sized}"
    bare, loader, measured = measured_throughput(results_name, args.max_minutes == 0,
                                                 lambda: bare_throughput(teacher.model, ds.info.shape, device=args.device, amp=amp),
                                                 lambda: loader_throughput(ds))
    source = "from npz" if spec in ("cifar10", "mnist") else f"`{args.dataset}` ({spec.split(':')[0]}, {px} px, decoded once and cached)"
    notes = [
        f"{ds.info.name} {source}: {len(ds.train)} train / {len(ds.test)} test images, {ds.info.num_classes} classes; "
        f"teacher {prof.about if model == prof.model else model}"
        + (f", pinned `{pinned}` (benchmarks/teachers/)" if pinned and teacher.reference.get("pinned") else
           f", trained here for {tcfg.epochs} epochs and cached")
        + f": {teacher.reference['test_accuracy']:.2f}% test accuracy, shared by every row.",
        f"Student protocol (same for all rows): `{describe_protocol(ecfg)}` (`tinyset protocols`), student {student}"
        + (f" ({prof.student_why})" if student == prof.student and prof.student_why else "") + ", "
        f"teacher soft labels computed online on each augmented view. Last-epoch test accuracy. Device: {args.device}"
        + (" (bf16 autocast, channels_last)." if amp else "."),
        f"Seeds are paired: seed s re-synthesises the set (run seed s) and trains one student (eval seed s); mean ± std "
        f"over {args.seeds} seeds holds synthesis and training variance for every row (the random subset is redrawn per seed).",
        "e2d: BN targets measured on real images under E2D's own view (bn_targets=view, the default); e2d_old_targets: "
        "the E2D/SRe2L convention (teacher running statistics + un-augmented class statistics). sre2l: its recipe for the "
        "resolution (<= 64 px: noise start, circular shift 0-4 px, no crop/flip, 1,000 iterations, lr 0.25, r_bn 0.01; "
        "above: the ImageNet recipe, one random-resized crop per batch + flip), view targets. e2d_solved_ce: images skip "
        "updates while their CE is below 0.1 (stripe remedy); e2d_lr_0.025: half E2D's lr; e2d_rerun: e2d again, the "
        "same-teacher control of rows added after the teacher was retrained (see each row's teacher_accuracy); e2d_no_memory: exploration "
        "only (no crop memory, no early stop); e2d_noise_init: E2D from noise instead of real images; rded_untiled: "
        "RDED with one crop per image (factor 1) where the default tiles 2x2 crops (>= 64 px); e2d_ref_*: e2d plus one "
        "part of e2d_reference (conv_stats: Conv2d-input + patch statistics; targets: crop-view targets pooled over the "
        "batch's labels; units: 2-class units of 20, persistent EMA; init: per-slot starts with repeats and flips).",
        f"Bare teacher forward+backward (input gradients, batch 100, channels_last): {bare:.0f} images/s. synthesis s = "
        "mean per seed, without the one-off BN-statistics pass (bn_stats_s; cached per teacher and view).",
        *([f"Image-folder path: {loader['decode_img_per_s']:.0f} images/s decoding the JPEG files (resize + centre crop), "
           f"{loader['cached_img_per_s']:.0f} images/s from the decoded uint8 cache (data.decode_cache={data.decode_cache}) "
           f"that every epoch after the first reads ({loader['images']} images, one process)."] if loader else []),
        "saved % = iterations the early stop saved / budget (all units); memory = mean crops held in E2D's memory over "
        "the run (curve in the PNG beside this table).",
        "template score: energy of the per-class mean high-pass residual / mean residual energy (1/10 for independent "
        "images at IPC 10, ~1 for a stripe template shared by a class).",
        "A gap under two pooled standard deviations is no gap. Seconds are wall-clock and noisy: rows that ran beside "
        "other jobs on the same cores are slower for the same work (compare e2d and e2d_rerun).",
    ]
    columns = [("method", "method"), ("ipc", "IPC"), ("protocol", "protocol"), ("seeds", "seeds"), ("accuracy", "accuracy % (mean ± std)"),
               ("synthesis_seconds", "synthesis s"), ("bn_stats_seconds", "bn_stats s"),
               ("teacher_backward_images", "teacher fwd+bwd images"), ("throughput_ratio", "synth. / bare throughput"),
               ("iterations_run", "iterations run"), ("iterations_saved_pct", "saved %"),
               ("memory_occupancy_mean", "memory"), ("template_score", "template score"), ("teacher_accuracy", "teacher %")]
    title = f"Decoupled distillation on {ds.info.name} at {px} px " + (
        f"({model} teacher and student)" if student == model else f"({model} teacher, {student} student)")
    rows = Rows(results_name, title, cmd, notes, columns)
    rows.data["measured"] = measured  # the notes' machine speeds, kept for a --max-minutes 0 re-render
    rows.data["start_commit"] = rows.data["commit"]
    rows.key = lambda r: (r["dataset"], r["method"], r["ipc"], r.get("protocol"), r.get("student"))
    rows.findings = findings

    proto = describe_protocol(ecfg)
    # set folders are keyed by the teacher that made them: the pinned name, else the cached model and epochs
    teacher_tag = pinned or f"cached-{slug(model)}-e{tcfg.epochs}"
    tag = slug(proto)
    stopped = False
    for ipc in args.ipc:
        for name in row_names:
            method, margs = ROWS[name]
            if stopped or rows.has(method=name, ipc=ipc, protocol=proto, student=student):
                continue
            per_seed = []
            for s in range(args.seeds):
                # the set (synthesis) is the student's business only through its folder name: a student
                # other than the teacher gets its own folders so a seed's accuracy is never mixed up
                student_tag = "" if student == model else f"-{slug(student)}"
                out = WORK / f"{sized}-{tag}-{teacher_tag}{student_tag}-{name}-ipc{ipc}-seed{s}"
                done = out / "bench_seed.json"
                if done.exists():
                    per_seed.append(json.loads(done.read_text()))
                    continue
                if not deadline.start_seed():
                    stopped = True
                    break
                if not out.exists():
                    cfg = RunConfig(method=method, ipc=ipc, device=args.device, amp=amp, teacher=tcfg, evaluate=False,
                                    data=data, seed=synthesis_seed(0, s))
                    cfg.method_args = dict(margs)
                    if method in ("e2d", "sre2l"):
                        cfg.method_args.setdefault("log_every", 0)
                        if args.iterations:
                            cfg.method_args["iterations"] = args.iterations
                    distill(cfg, out, progress=False)
                art = load_artifact(out)
                syn = art.manifest["synthesis"]
                units = syn.get("units", [])
                budget = art.manifest["method_config"].get("iterations")
                t1 = time.perf_counter()
                acc = train_student(art.images, art.labels, ds, teacher.model, ecfg, "soft", derive_seed(0, "eval", s),
                                    args.device, amp=amp, progress=False, desc=f"{name} seed {s}")
                rec = {"seed": s, "accuracy": acc, "eval_seconds": time.perf_counter() - t1,
                       "synthesis_seconds": syn["seconds"] - syn.get("class_stats_seconds", 0.0),
                       "bn_stats_seconds": syn.get("class_stats_seconds", 0.0),
                       "teacher_forward_images": syn["teacher_forward_images"],
                       "teacher_backward_images": syn["teacher_backward_images"],
                       "iterations_run": syn.get("iterations_run"),
                       "iterations_saved_pct": (100.0 * syn.get("iterations_saved", 0) / (budget * len(units))
                                                if budget and units and "iterations_saved" in syn else None),
                       "memory_occupancy": pad_reduce([u.get("memory_occupancy") for u in units], sum),
                       "template_score": template_score(art.images, art.labels),
                       "method_config": art.manifest["method_config"], "torch_threads": art.manifest.get("torch_threads")}
                tmp = done.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(rec))
                tmp.replace(done)
                per_seed.append(rec)
                deadline.end_seed()
                log.info("%s ipc %d seed %d: %.2f%% (synthesis %.0fs)", name, ipc, s, acc, rec["synthesis_seconds"])
            if stopped:
                break
            accs = [r["accuracy"] for r in per_seed]
            secs = statistics.fmean(r["synthesis_seconds"] for r in per_seed)
            back = per_seed[0]["teacher_backward_images"]
            rate = back / secs if back and secs > 0 else None
            its = [r["iterations_run"] for r in per_seed if r["iterations_run"] is not None]
            saved = [r["iterations_saved_pct"] for r in per_seed if r.get("iterations_saved_pct") is not None]
            occ = [round(v, 2) for v in pad_reduce([r.get("memory_occupancy") for r in per_seed], statistics.fmean)]
            rows.add({
                "dataset": short, "method": name, "ipc": ipc, "bits": 32, "student": student, "protocol": proto,
                "seeds": len(accs),
                "accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "accuracies": accs, "synthesis_seeds": [synthesis_seed(0, s) for s in range(args.seeds)],
                "synthesis_seconds": round(secs, 2), "bn_stats_seconds": round(max(r["bn_stats_seconds"] for r in per_seed), 1),
                "eval_loss": "kd", "teacher_forward_images": per_seed[0]["teacher_forward_images"],
                "teacher_backward_images": back, "synthesis_img_per_s": rate, "bare_teacher_img_per_s": bare,
                "throughput_ratio": (rate / bare) if rate else None,
                "iterations_run": statistics.fmean(its) if its else None,
                "iterations_saved_pct": round(statistics.fmean(saved), 1) if saved else None,
                "memory_occupancy_mean": round(statistics.fmean(occ), 1) if occ else None,
                "memory_occupancy": occ,
                "template_score": round(statistics.fmean(r["template_score"] for r in per_seed), 3),
                "method_config": per_seed[0]["method_config"], "eval_epochs": epochs, "eval_config": to_dict(ecfg),
                "teacher": pinned, "class_names": list(ds.info.class_names),
                "eval_seconds": sum(r["eval_seconds"] for r in per_seed), "teacher_accuracy": teacher.reference["test_accuracy"],
                "teacher_seconds_this_run": round(teacher_secs, 1), "loader": loader, "model": model, "image_size": px, "device": args.device,
                "torch_threads": per_seed[0]["torch_threads"],
            })
        png = plot_memory([r for r in rows.data["rows"] if r["ipc"] == ipc], RESULTS / f"{rows.name}_memory_ipc{ipc}.png",
                          f"E2D crop memory: {Path(ds.info.name.split(':', 1)[-1]).name} at {px} px, IPC {ipc} (mean over seeds)")
        if png:
            print(f"wrote {png}")
    if rows.path.exists():
        rows.write_markdown()  # the findings of every kept row, also when --max-minutes stopped this run early
        print(f"wrote {rows.path} and {rows.path.with_suffix('.md')}")
    else:  # stopped before any row had all its seeds: they are kept under work/ for the rerun
        print(f"no row finished yet: nothing written to {rows.path.name}; finished seeds are kept under {WORK}")


if __name__ == "__main__":
    main()
