"""QuADD: distillation under a bit budget, counted honestly (issue 22). One rows file per dataset:

(A) CIFAR-10, equal IPC 10 at 32/8/4/3/2 bits: ``fp32``, ``posthoc`` (tinyset compress of the fp32
    set, calibrated clip of the same granularity as the loop's: one per set for DM, one per image
    for E2D) and ``quadd`` (quantizer in the loop), with DM and E2D as the base, uniform at 8/4 bits
    and uniform + APoT at 3/2 bits; ``random`` = the random real subset at every (IPC, bits) of the
    part (quantized post hoc, one clip), and at 2 bits ``random_imageclip`` with a clip per image as
    E2D's sets have. Students learn from the pinned teacher online (label mode
    ``teacher``: its bytes count in ``student_bytes``).
(B) CIFAR-10, fixed budget = the fp32 IPC-10 set's bytes, under two label modes: ``hard`` (budget =
    its set_bytes) and ``stored`` (soft labels stored beside the set and counted: budget = its
    set_bytes + its stored soft labels). At each width, the most images per class whose
    student_bytes fit (per base: E2D's per-image clips cost bytes too): the random real subset, QuADD
    on both bases, the honest 8-bit points (``uint8``: the random subset and the DM set as 8-bit
    codes), with E2D the random subset with a clip per image (``random_imageclip``), and the fp32
    IPC-10 references themselves.
(C) beam data (``tinyset.data.beam``): full data at 32 bits, 8 bits and on 3GPP's L1-RSRP reporting
    grid (7 bits, 1 dB: the realistic full-data reference), random subsets, DM, QuADD and post-hoc
    at several sizes; MLP students, hard labels, top-1 and top-3. Quantizers work in normalised
    units (their clips learn; in raw dBm at lr 0.01 they barely moved).

Every CIFAR row is evaluated under the ``rded`` protocol (``eval.protocol=rded``; ``--protocol``,
``--eval-set`` override it) with the pinned ConvNet-3 teacher (``benchmarks/pinned.py``). Seeds are
paired: seed s re-synthesises the set (run seed s) or redraws the random subset, then trains one
student; each seed is kept under the work folder as it finishes (a rerun resumes), and a row's std
holds synthesis and training variance. 5 seeds by default.

    python benchmarks/quadd.py --part beam
    python benchmarks/quadd.py --part cifar --data-root ../shared/data --sections A --bases dm
    python benchmarks/quadd.py --part cifar --sections A --only 'A-fp32-*' 'A-*-uniform3' 'A-*2'  # claim rows first
    python benchmarks/quadd.py --part cifar --smoke      # a minutes-long check of the script

``set_bytes`` = the set file on disk (codes or pixels, clips, labels, header and decode metadata);
``student_bytes`` = set_bytes + what the label mode needs (hard: nothing; stored: the soft-labels
file; teacher: the teacher's parameters at float32). Compression is quoted on both, against the
fp32 IPC-10 set (CIFAR) or the full float32 data (beam). Rows are written as they finish; a rerun
skips finished rows and seeds."""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import logging
import statistics
import time
from pathlib import Path

import torch
import yaml

from common import (CLAIM_SEEDS, RESULTS, WORK, Deadline, Rows, TimeUp, add_max_minutes, as_stored, check_kept, command_line, mean_std,
                    paired_seeds, paired_wins, two_pooled_std)
from pinned import PINNED, add_teacher_args, load_pinned, paths
from tinyset.artifact import load_artifact, save_artifact, save_quantized_set, teacher_bytes
from tinyset.config import DataConfig, EvalConfig, RunConfig, TeacherConfig, build_config, describe_protocol, to_dict
from tinyset.data import load_dataset
from tinyset.data.base import TensorSplit
from tinyset.data.beam import class_balance, rsrp_from_report, rsrp_report, topk_accuracy
from tinyset.eval.protocol import eval_spec, train_student
from tinyset.eval.trainer import train
from tinyset.jobs.budget import LabelCost, ProxyConfig, parse_budget, plan_budget, search_budget
from tinyset.jobs.compress import CompressConfig, attach_soft_labels, compress_artifact, quantize_set
from tinyset.jobs.distill import distill
from tinyset.kd import build_kd_loss
from tinyset.models import get_model
from tinyset.quant import build_quantizer
from tinyset.quant.codes import components_from_codes, pack_labels
from tinyset.quant.soft_labels import soft_label_file_bytes
from tinyset.quant.space import DataSpace
from tinyset.teachers.supervised import get_teacher
from tinyset.utils.files import atomic_write_text
from tinyset.utils.seeding import derive_seed

HERE = Path(__file__).parent
log = logging.getLogger("benchmarks.quadd")

DEADLINE = Deadline(None)  # --max-minutes; checked before every synthesis, compression, row and seed


class QuaddRows(Rows):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        # a row without set_bytes predates the honest accounting (issue 22): rerun it, never skip it
        stale = [r["row_id"] for r in self.data["rows"] if "set_bytes" not in r]
        if stale:
            log.warning("%s: %d rows predate the set/student-bytes accounting and will be rerun: %s",
                        self.name, len(stale), ", ".join(stale))
            self.data["rows"] = [r for r in self.data["rows"] if "set_bytes" in r]

    def key(self, row):
        return (row["dataset"], row["row_id"])


# ----------------------------------------------------------------------------------------------
# shared: make a set (distill / compress / relabel) once per seed, cached under the work folder
# ----------------------------------------------------------------------------------------------


def make_set(work: Path, name: str, ds_name: str, data_root, tcfg, method: str, ipc: int, margs: dict, seed: int = 0) -> Path:
    out = work / f"{name}-s{seed}"
    # beam sets need no teacher (tcfg None): the default config, never used, keeps RunConfig whole
    cfg = RunConfig(method=method, ipc=ipc, device="cpu", teacher=tcfg or TeacherConfig(), evaluate=False,
                    data=DataConfig(dataset=ds_name, data_root=data_root), seed=seed)
    cfg.method_args = {**margs}
    if method in ("e2d", "sre2l"):
        cfg.method_args.setdefault("log_every", 0)
    if out.exists():  # cached by name: refuse one made under other options (e.g. another --dm-image-lr)
        check_kept(out, made_with(yaml.safe_load((out / "config.yaml").read_text())), made_with(to_dict(cfg)))
        return out
    DEADLINE.check()
    distill(cfg, out, progress=False)
    return out


def made_with(cfg: dict) -> dict:
    """What makes a cached set: the method, its arguments, the size, the seed, the data and the teacher."""
    return {"method": cfg["method"], "method_args": cfg.get("method_args") or {}, "ipc": cfg["ipc"],
            "seed": cfg["seed"], "dataset": cfg["data"]["dataset"],
            # the pinned file by name: the same teacher reached from another checkout is the same teacher
            "teacher": Path(cfg["teacher"]["checkpoint"]).name if cfg["teacher"].get("checkpoint") else None}


def make_compressed(src: Path, quantizer: str, bits: int, calibrate: int = 100, granularity="tensor", **q) -> Path:
    out = src.parent / f"{src.name}-{quantizer}{bits}{granularity[0]}{'' if calibrate else '-raw'}"
    if not out.exists():
        DEADLINE.check()
        compress_artifact(src, out, CompressConfig(quantizer=quantizer, bits=bits, calibrate_steps=calibrate,
                                                   granularity=granularity, **q))
    return out


def with_soft_labels(src: Path, teacher, k: int | None, bits: int) -> Path:
    """The same set file with the teacher's soft labels stored beside it (label mode stored)."""
    out = src.parent / f"{src.name}-soft{k or 'all'}b{bits}"
    if not out.exists():
        DEADLINE.check()
        attach_soft_labels(src, out, teacher, k, bits)
    return out


def qargs(name, bits, gran="tensor", **extra):
    return {"quantizer": {"name": name, "bits": bits, "granularity": gran, **extra}}


def synthesis_seconds(art) -> float | None:
    syn = art.manifest.get("synthesis") or {}
    return syn.get("seconds")


def summarise(recs: list[dict]) -> dict:
    accs = [r["accuracy"] for r in recs]
    mean, std = mean_std(accs)
    out = {"seeds": len(recs), "accuracy_mean": mean, "accuracy_std": std, "accuracies": accs,
           "synthesis_seeds": [r["seed"] for r in recs],
           "set_bytes": max(r["set_bytes"] for r in recs), "student_bytes": max(r["student_bytes"] for r in recs)}
    syn = [r["synthesis_seconds"] for r in recs if r.get("synthesis_seconds") is not None]
    out["synthesis_seconds"] = statistics.fmean(syn) if syn else None
    out["eval_seconds"] = round(statistics.fmean(r["eval_seconds"] for r in recs), 1)
    return out


# ----------------------------------------------------------------------------------------------
# (A) + (B): CIFAR-10
# ----------------------------------------------------------------------------------------------


def selected(row_id: str, patterns: list[str] | None) -> bool:
    """``--only``: shell-style patterns on row ids, so the rows that carry a claim can run first."""
    return not patterns or any(fnmatch.fnmatchcase(row_id, p) for p in patterns)


def eval_config(protocol: str, student: str, overrides: list[str]) -> EvalConfig:
    """The resolved EvalConfig of a named protocol with dotted ``eval.`` overrides."""
    extra = [o if o.startswith("eval.") else f"eval.{o}" for o in overrides]
    return build_config(RunConfig, None, [f"eval.protocol={protocol}", f"eval.student={student}", *extra]).eval


def cifar(args) -> None:
    smoke = args.smoke
    if smoke:
        torch.set_num_threads(1)
    dsname = args.dataset
    if dsname != "cifar10" and not smoke:
        raise SystemExit("--dataset other than cifar10 is for --smoke checks (the pinned teacher is CIFAR-10's)")
    ds = load_dataset(dsname, DataConfig(dataset=dsname, data_root=args.data_root))
    k = ds.info.num_classes
    if smoke:  # the script's check: a tiny teacher, trained in seconds (not the pinned one)
        tcfg = TeacherConfig(model="convnet:depth=3,width=16", epochs=1, cache_dir=str(WORK / "smoke-cache"))
        teacher = get_teacher(ds, tcfg, "cpu", progress=False)
        tname = "smoke teacher"
    else:
        teacher = load_pinned(args.pinned_teacher, ds, retrain=args.retrain_teacher, cache=args.cache)
        tcfg = dataclasses.replace(PINNED[args.pinned_teacher].teacher, checkpoint=str(paths(args.pinned_teacher)[0]))
        tname = f"pinned `{args.pinned_teacher}`"
    tmodel = teacher.model.eval()
    tb = teacher_bytes(tmodel)
    ipc0 = 1 if smoke else 10
    seeds = 1 if smoke else args.seeds
    over = list(args.eval_set) + (["epochs=2"] if smoke else [])
    ecfg_a = eval_config(args.protocol, args.student, over)
    ecfg_b = eval_config(args.protocol, args.b_student, over)
    dm_args = {"iterations": 3 if smoke else args.dm_iterations, "batch_real": 16 if smoke else 64, "lr": args.dm_image_lr}
    e2d_args = {"iterations": 3 if smoke else 200, "class_stats": not smoke}
    all_bases = {"dm": ("dm", dm_args, "tensor"), "e2d": ("e2d", e2d_args, "image")}
    bases = {b: all_bases[b] for b in args.bases}
    soft_k, soft_bits = args.soft_k or None, args.soft_bits
    work = Path(args.work_dir) if args.work_dir else WORK / (f"quadd-{dsname}-smoke" if smoke else "quadd-cifar-v2")
    name = f"quadd_{dsname}_smoke" if smoke else "quadd_cifar10"
    ref_set = parse_budget(f"ipc{ipc0}@32", ds.info.shape, k, info=ds.info)  # the fp32 set file, exact
    ref_student = {"teacher": ref_set + tb["bytes"], "hard": ref_set,
                   "stored": ref_set + soft_label_file_bytes(ipc0 * k, k, soft_k, soft_bits)}
    t_acc = teacher.reference.get("test_accuracy") or 0.0
    notes = [
        f"CIFAR-10; teacher: {tname} ({t_acc:.2f}% test; {tb['parameters']} parameters + {tb['buffers']} BN statistics "
        f"at float32 = {tb['bytes']} B). Evaluation protocol: {describe_protocol(ecfg_a)} (`tinyset protocols`); "
        f"part A student {ecfg_a.student}, part B student {ecfg_b.student} (a narrow student, sized for the CPU). "
        "Last-epoch test accuracy on the 10,000 test images, mean ± std over paired seeds.",
        "Paired seeds: seed s re-synthesises the set (run seed s) or redraws the random subset, then trains one "
        "student (eval seed s): the std holds synthesis and training variance. Each seed is kept as it finishes.",
        f"Sized for a 2-core CPU: DM with a width-32 ConvNet-3 embedding net (instance norm), {dm_args['iterations']} "
        f"iterations, {dm_args['batch_real']} real images per class per step, Adam lr {dm_args['lr']} in [0, 1] pixel "
        "units (the paper: 20,000 iterations, 256; DM's default lr 0.01 turns 300 Adam steps into high-frequency "
        "noise on images, see docs/findings.md); "
        "E2D 200 iterations with early stop.",
        "set_bytes = the set file on disk (codes + clips + labels at 4 bits + header and decode metadata; fp32: "
        "float32 pixels + int64 labels, as the pipeline stores them). student_bytes = set_bytes + the label mode's "
        f"bytes: teacher (A; online soft labels) + {tb['bytes']} B, hard (B) + 0, stored (B) + the soft-labels file "
        f"(the teacher's logits of each set, {'top-' + str(soft_k) if soft_k else 'all classes'} at {soft_bits} bits). "
        f"compression (set / student) = the fp32 IPC-{ipc0} set's count in the same label mode / the row's.",
        "posthoc = `tinyset compress` of the fp32 set of the same seed, clip calibrated for 100 Adam steps on MSE "
        "with the loop's granularity (DM: one clip per set; E2D: one per image); quadd = the quantizer in the loop, "
        "started from quantized real images; quadd_frozen = the same loop with post-hoc's clip (100 Adam steps on the "
        "starting images' MSE, then frozen: only the codes learn); random = the random real subset (one clip); "
        "random_imageclip = the same with a clip per image (E2D's granularity); "
        "uint8 = stored as 8-bit codes.",
        f"Part B: the budget is the fp32 IPC-{ipc0} set's student_bytes in the row's label mode; each width holds the most "
        "images per class whose student_bytes fit, per base (E2D's per-image clips are counted).",
        "A gap under two standard deviations is no gap.",
    ]
    cols = [("part", "part"), ("label_mode", "labels"), ("method", "method"), ("base", "base"), ("quantizer", "quantizer"),
            ("ipc", "IPC"), ("bits", "bits"), ("set_bytes", "set_bytes"), ("student_bytes", "student_bytes"),
            ("compression_set", "compression x (set)"), ("compression_student", "compression x (student)"),
            ("seeds", "seeds"), ("accuracy", "accuracy % (mean ± std)"), ("synthesis_seconds", "synthesis s / seed")]
    rows = QuaddRows(name, f"QuADD on {ds.info.name}: accuracy against bits and bytes" + (" (smoke check)" if smoke else ""),
                     command_line(), notes, cols)
    rows.findings = lambda rs: cifar_findings(rs, held_out_picks(name))
    rows.summary = part_b_grid

    planned: list[tuple] = []  # every row this run could make, listed before any runs so --only is checked first

    def row(*spec) -> None:
        planned.append((spec[0], lambda: evaluate(*spec)))

    def evaluate(row_id, part, method, base, quantizer, bits, make, mode, ecfg):
        """One row: ``make(s)`` -> the artifact of seed s (synthesised / redrawn for that seed)."""
        if not selected(row_id, args.only):
            return
        made = {"set_args": all_bases[base][1] if base in all_bases else {}, "eval_config": to_dict(ecfg),
                "teacher": tname, "label_mode": mode, "soft_labels": [soft_k, soft_bits] if mode == "stored" else None}
        made = as_stored(made)  # compared with the row as the json file holds it
        old = rows.has(row_id=row_id)
        if old:  # a row made under other options is not this run's row: say so rather than skip it
            check_kept(f"{rows.path.name} row {row_id}", {k: old.get(k) for k in made if k in old},
                       {k: v for k, v in made.items() if k in old},
                       "remove the row to remake it, or write this run's table elsewhere (TINYSET_BENCH_RESULTS)")
            return
        DEADLINE.check()

        def run_seed(s: int) -> dict:
            path = make(s)
            if mode == "stored":
                path = with_soft_labels(path, tmodel, soft_k, soft_bits)
            art = load_artifact(path)
            DEADLINE.check()
            t0 = time.perf_counter()
            acc = train_student(art.images, art.labels, ds, tmodel if mode == "teacher" else None, ecfg,
                                {"teacher": "soft"}.get(mode, mode), derive_seed(0, "eval", s), "cpu", progress=False,
                                desc=f"{row_id} seed {s}", soft_labels=art.soft_labels if mode == "stored" else None)
            extra = tb["bytes"] if mode == "teacher" else art.label_bytes("stored") if mode == "stored" else 0
            log.info("%s seed %d: %.2f%%", row_id, s, acc)
            return {"accuracy": acc, "set_bytes": art.set_bytes, "student_bytes": art.set_bytes + extra,
                    "ipc": len(art.labels) // k, "synthesis_seconds": synthesis_seconds(art),
                    "eval_seconds": time.perf_counter() - t0, "artifact": str(path)}

        recs = paired_seeds(work / "seeds" / row_id, seeds, run_seed, DEADLINE, config=made)
        if recs is None:
            raise TimeUp
        s = summarise(recs)
        rows.add({**made, "dataset": ds.info.name, "row_id": row_id, "part": part, "label_mode": mode, "method": method,
                  "base": base, "quantizer": quantizer, "ipc": recs[0]["ipc"], "bits": bits, "bytes": s["set_bytes"],
                  **s, "compression_set": round(ref_set / s["set_bytes"], 2),
                  "compression_student": round(ref_student[mode] / s["student_bytes"], 2), "student": ecfg.student,
                  "protocol": describe_protocol(ecfg), "eval_config": to_dict(ecfg), "teacher": tname,
                  "teacher_accuracy": t_acc, "teacher_bytes": tb["bytes"], "artifacts": [r["artifact"] for r in recs]})
        log.info("%s: %.2f ± %.2f%%", row_id, s["accuracy_mean"], s["accuracy_std"])

    def held_out_search(mode: str, labels: LabelCost, budget: int) -> None:
        """``tinyset budget``'s search on the same budget: which (IPC, bits) a user would pick blind,
        scored by proxy students on a held-out part of the training set (never the test set)."""
        row_id = f"B-{mode}-search"
        if not selected(row_id, args.only):
            return
        path = RESULTS / f"{name}_search_{mode}.json"
        proxy = ProxyConfig(student=args.b_student, seeds=1 if smoke else 3, steps=20 if smoke else 300)
        made = as_stored({"budget": budget, "candidates": [32, *b_bits], "proxy": dataclasses.asdict(proxy),
                          "soft_labels": [soft_k, soft_bits] if mode == "stored" else None})
        if path.exists():  # kept: a search made under other options is not this run's
            old = json.loads(path.read_text()).get("options", {})
            check_kept(path.name, {k2: old.get(k2) for k2 in made}, made, "remove the file to search again")
            return
        DEADLINE.check()
        found = search_budget(ds, budget, (32, *b_bits), proxy=proxy, labels=labels,
                              teacher=tmodel if mode == "stored" else None)
        atomic_write_text(path, json.dumps({"row_id": row_id, "command": command_line(), "options": made,
                                            "search": found.to_dict()}, indent=2, default=float))
        log.info("%s: %s", row_id, found.reason)
        rows.write_markdown()  # the findings quote the pick

    def fp32(base: str, ipc: int):
        method, margs, _ = all_bases[base]
        return lambda s: make_set(work, f"{base}-fp32-ipc{ipc}", dsname, args.data_root, tcfg, method, ipc, margs, s)

    def random_set(ipc: int):
        return lambda s: make_set(work, f"random-ipc{ipc}", dsname, args.data_root, tcfg, "random", ipc, {}, s)

    def quadd(base: str, q: str, bits: int, ipc: int, tag: str = "", **extra):
        method, margs, gran = all_bases[base]
        return lambda s: make_set(work, f"{base}-quadd{tag}-{q}{bits}-ipc{ipc}", dsname, args.data_root, tcfg, method,
                                  ipc, {**margs, **qargs(q, bits, gran, **extra)}, s)

    def compressed(make, q: str, bits: int, gran: str = "tensor", calibrate: int = 100):
        return lambda s: make_compressed(make(s), q, bits, calibrate, gran)

    # (A) equal IPC, online teacher
    widths = [(8, ["uniform"]), (4, ["uniform"]), (3, ["uniform", "apot"]), (2, ["uniform", "apot"])]
    if smoke:
        widths = [(3, ["apot"]), (2, ["uniform"])]
    if "A" in args.sections:
        row("A-random-fp32", "A", "random", "none", "none", 32, random_set(ipc0), "teacher", ecfg_a)
        for bits, qs in widths:
            for q in qs:
                row(f"A-random-{q}{bits}", "A", "random", "none", q, bits, compressed(random_set(ipc0), q, bits),
                         "teacher", ecfg_a)
        # E2D's 2-bit sets keep a clip per image: the random subset with the same clips separates the images
        # E2D picks from the finer clip
        row("A-random-uniform2-imageclip", "A", "random_imageclip", "none", "uniform", 2,
            compressed(random_set(ipc0), "uniform", 2, "image"), "teacher", ecfg_a)
        for base, (method, margs, gran) in bases.items():
            row(f"A-fp32-{base}", "A", "fp32", base, "none", 32, fp32(base, ipc0), "teacher", ecfg_a)
            for bits, qs in widths:
                for q in qs:
                    row(f"A-posthoc-{base}-{q}{bits}", "A", "posthoc", base, q, bits,
                             compressed(fp32(base, ipc0), q, bits, gran), "teacher", ecfg_a)
                    row(f"A-quadd-{base}-{q}{bits}", "A", "quadd", base, q, bits, quadd(base, q, bits, ipc0),
                             "teacher", ecfg_a)
                    if bits == 2 and q == "uniform":  # does post-hoc's clip explain post-hoc vs the loop?
                        row(f"A-quaddfrozen-{base}-{q}{bits}", "A", "quadd_frozen", base, q, bits,
                            quadd(base, q, bits, ipc0, "-frozen", calibrate=100, freeze=True), "teacher", ecfg_a)

    # (B) fixed budget = the fp32 set at ipc0, under hard and stored labels
    b_bits = (2,) if smoke else tuple(args.b_bits)
    for mode in (args.modes if "B" in args.sections else []):
        labels = LabelCost(mode, soft_k, soft_bits) if mode == "stored" else LabelCost()
        budget = ref_student[mode]
        for base in ("random", *bases):
            row(f"B-{mode}-fp32-{base}", "B", "fp32", "none" if base == "random" else base, "none", 32,
                     random_set(ipc0) if base == "random" else fp32(base, ipc0), mode, ecfg_b)
        planned.append((f"B-{mode}-search", lambda mode=mode, labels=labels, budget=budget: held_out_search(mode, labels, budget)))
        # clip granularity -> bits -> the most images per class that fit the budget
        fits = {g: {o.bits: o.ipc for o in plan_budget(budget, ds.info.shape, k, b_bits, "uniform", g, info=ds.info,
                                                       labels=labels).options}
                for g in {"tensor", *(all_bases[b][2] for b in bases)}}
        for b in b_bits:
            n = fits["tensor"][b]
            if n < 1:
                continue
            row(f"B-{mode}-random-uniform{b}", "B", "random", "none", "uniform", b,
                     compressed(random_set(n), "uniform", b), mode, ecfg_b)
            if b == 8:  # the honest 8-bit points: real pixels are 8-bit already
                row(f"B-{mode}-uint8-random", "B", "uint8", "none", "uniform", 8,
                         compressed(random_set(n), "uniform", 8, calibrate=0), mode, ecfg_b)
                if "dm" in bases:
                    row(f"B-{mode}-uint8-dm", "B", "uint8", "dm", "uniform", 8,
                             compressed(fp32("dm", n), "uniform", 8, calibrate=0), mode, ecfg_b)
            if "e2d" in bases:  # E2D keeps a clip per image: the random subset with the same clips, at its count
                ni = fits["image"][b]
                if ni >= 1:
                    row(f"B-{mode}-random-uniform{b}-imageclip", "B", "random_imageclip", "none", "uniform", b,
                        compressed(random_set(ni), "uniform", b, "image"), mode, ecfg_b)
            for base, (method, margs, gran) in bases.items():
                nb = fits[gran][b]
                if nb >= 1:
                    row(f"B-{mode}-quadd-{base}-uniform{b}", "B", "quadd", base, "uniform", b,
                             quadd(base, "uniform", b, nb), mode, ecfg_b)
    row_ids = [row_id for row_id, _ in planned]
    unmatched = [p for p in args.only or [] if not any(selected(r, [p]) for r in row_ids)]
    if unmatched:
        raise SystemExit(f"--only: no row id matches {', '.join(map(repr, unmatched))}; the ids are {', '.join(row_ids)}")
    for _, run in planned:
        run()
    rows.write_markdown()
    plot(rows, f"{name}.png", f"{ds.info.name}: accuracy against bytes")
    pictures = [RESULTS / (name + ".png")]
    if plot_budget(rows.data["rows"], f"{name}_budget.png", f"{ds.info.name}, part B: one byte budget, bits traded for images",
                   held_out_picks(name)):
        pictures.append(RESULTS / f"{name}_budget.png")
    print(f"wrote {rows.path}, {rows.path.with_suffix('.md')} and {', '.join(map(str, pictures))}")


# ----------------------------------------------------------------------------------------------
# (C) beam data
# ----------------------------------------------------------------------------------------------


def beam_student(x, y, ds, seed, epochs_steps=2000, k_top=3):
    """MLP student on (x, y) with hard labels; returns (top-1, top-k) on the test split."""
    n = len(y)
    bs = min(128, max(8, n // 4))
    epochs = int(min(300, max(10, round(epochs_steps * bs / n))))
    ecfg = EvalConfig(student="mlp:hidden=128,depth=2", epochs=epochs, batch_size=bs, lr=0.003, weight_decay=0.01,
                      cutmix=0.0, seeds=1)
    torch.manual_seed(derive_seed(seed, "student-init"))
    model = get_model(ecfg.student, ds.info)
    train(model, TensorSplit(x, y), eval_spec(ecfg, channels_last=False), build_kd_loss("ce"), test_split=None,
          device="cpu", seed=derive_seed(seed, "student-train"), progress=False)
    model.eval()
    with torch.no_grad():
        logits = model(ds.test.x)
    return topk_accuracy(logits, ds.test.targets, 1), topk_accuracy(logits, ds.test.targets, k_top)


def full_sets(work: Path, ds) -> dict[str, Path]:
    """The full training data as sets, so their bytes are files on disk too: float32 features with
    packed labels (``fp32``), 8-bit codes per feature (``uint8``) and the 3GPP L1-RSRP reports
    (``3gpp``: 7-bit reported values, decoding to each 1 dB step's midpoint)."""
    x, y = ds.train.x, ds.train.targets
    k = ds.info.num_classes
    base = {"dataset": ds.info.name, "dataset_info": ds.info.to_dict(), "method": "full", "ipc": None}
    out = {"fp32": work / "full-fp32", "uint8": work / "full-uint8", "3gpp": work / "full-3gpp"}
    if not out["fp32"].exists():
        packed, lb = pack_labels(y, k)
        save_artifact(out["fp32"], {"images": x, "labels": packed}, {**base, "bits": {"labels": lb}},
                      decoder_config={"label_bits": lb, "num_samples": len(y)})
    if not out["uint8"].exists():
        dec, q = quantize_set(x, y, ds.info, CompressConfig(quantizer="uniform", bits=8, granularity="channel",
                                                            space="pixels", calibrate_steps=0), k)
        save_quantized_set(out["uint8"], q, base, dec, y)
    if not out["3gpp"].exists():
        r = rsrp_report(x)
        q = build_quantizer("uniform", 7, "tensor", signed=False)  # lo + code * 1 dB, code = the reported value
        q.load_state({"lo": torch.full((1, 1), -156.5), "hi": torch.full((1, 1), -156.5 + 127)}, tuple(x.shape))
        comps = components_from_codes(r, q, y, k, q.config(), DataSpace().to_config())
        save_quantized_set(out["3gpp"], comps, {**base, "report": "3GPP TS 38.133 L1-RSRP"}, rsrp_from_report(r), y)
    return out


def beam(args) -> None:
    # tiny MLPs: one thread (on a shared 2-core machine, more threads made each step ~100x slower)
    torch.set_num_threads(1)
    ds = load_dataset("beam")
    k = ds.info.num_classes
    work = Path(args.work_dir) if args.work_dir else WORK / "quadd-beam-v2"
    work.mkdir(parents=True, exist_ok=True)
    full_n = len(ds.train)
    seeds = args.seeds
    dm_args = {"iterations": args.dm_iterations, "batch_real": 128}
    space = "normalized"
    full = full_sets(work, ds)
    ref_set = load_artifact(full["fp32"]).set_bytes
    ref_3gpp = load_artifact(full["3gpp"]).set_bytes
    bal_train, bal_test = class_balance(ds.train.targets, k), class_balance(ds.test.targets, k)
    counts = bal_train["counts"]
    small = ", ".join(f"{c} ({counts[c]})" for c in sorted(range(k), key=lambda c: counts[c])[:3])
    notes = [
        f"beam data (`tinyset.data.beam`, defaults: 32-antenna ULA, Set A 32 narrow DFT beams, Set B 8 wide beams, "
        f"{full_n} train / {len(ds.test)} test users, seed 0): input L1-RSRP (dBm) of Set B, label the best Set-A beam.",
        f"Class balance: train counts per class {bal_train['min']}-{bal_train['max']} (smallest: beams "
        f"{small}; normalised entropy "
        f"{bal_train['normalized_entropy']}); test majority class {bal_test['majority_accuracy']:.2f}% (the floor of any "
        "student). Distilled and random sets are class-balanced (the per-class count of the row); full data is not.",
        "Student: MLP (2 hidden layers of 128, BatchNorm), hard labels (CE), AdamW lr 0.003, ~2,000 steps "
        "(10-300 epochs by set size); top-1 and top-3 test accuracy, mean ± std over paired seeds (seed s "
        "re-synthesises the DM/QuADD set or redraws the random subset, then trains one student).",
        f"DM: fresh MLP embedding nets (hidden 128), {dm_args['iterations']} iterations, {dm_args['batch_real']} real "
        "samples per class per step, started from real samples, lr 0.01 in units of each feature's std "
        "(`lr_units`). QuADD: uniform quantizer, one clip per feature (granularity channel), learned in the loop "
        f"in {space} units (space column; `quantizer_space` in each set's stats). posthoc: the DM set of the same "
        "seed compressed the same way; random: the random subset compressed the same way.",
        "full-3gpp: the training data as a UE reports it, on 3GPP's L1-RSRP grid (TS 38.133 Table 10.1.6.1-1: "
        "7-bit reported values, 1 dB, -140 to -44 dBm), stored as 7-bit codes: the realistic full-data reference.",
        f"set_bytes = the set file on disk (codes + clips + labels at 5 bits + header and decode metadata; full fp32: "
        f"float32 features + the same labels). Hard labels: student_bytes = set_bytes. compression = full float32 "
        f"data ({ref_set} B) / set_bytes; vs 3GPP = the 3GPP-reported full data ({ref_3gpp} B) / set_bytes.",
        "A gap under two standard deviations is no gap.",
    ]
    cols = [("method", "method"), ("base", "base"), ("quantizer", "quantizer"), ("space", "space"), ("ipc", "per class"),
            ("bits", "bits"), ("set_bytes", "set_bytes"), ("student_bytes", "student_bytes"),
            ("compression", "compression x"), ("compression_3gpp", "vs 3GPP x"), ("seeds", "seeds"),
            ("accuracy", "top-1 % (mean ± std)"), ("top3", "top-3 %"), ("synthesis_seconds", "synthesis s / seed")]
    rows = QuaddRows("quadd_beam", "QuADD on beam-management data: accuracy against bits and bytes", command_line(), notes, cols)
    rows.findings = beam_findings

    def add(row_id, method, base, quantizer, bits, make, ipc=None, qspace=None):
        """One row: ``make(s)`` -> the artifact of seed s."""
        if rows.has(row_id=row_id):
            return
        DEADLINE.check()

        def run_seed(s: int) -> dict:
            art = load_artifact(make(s))
            DEADLINE.check()
            t0 = time.perf_counter()
            t1, t3 = beam_student(art.images, art.labels, ds, derive_seed(0, "eval", s))
            return {"accuracy": t1, "top3": t3, "set_bytes": art.set_bytes, "student_bytes": art.student_bytes("hard"),
                    "synthesis_seconds": synthesis_seconds(art), "eval_seconds": time.perf_counter() - t0}

        recs = paired_seeds(work / "seeds" / row_id, seeds, run_seed, DEADLINE,
                            config={"dm_args": dm_args if base == "dm" else {},
                                    "space": qspace or ("raw" if quantizer == "none" else space)})
        if recs is None:
            raise TimeUp
        s = summarise(recs)
        rows.add({"dataset": "beam", "row_id": row_id, "method": method, "base": base, "quantizer": quantizer,
                  "space": qspace or ("raw" if quantizer == "none" else space), "ipc": ipc, "bits": bits,
                  "bytes": s["set_bytes"], **s, "compression": round(ref_set / s["set_bytes"], 1),
                  "compression_3gpp": round(ref_3gpp / s["set_bytes"], 1), "student": "mlp:hidden=128,depth=2",
                  "top3": round(statistics.fmean(r["top3"] for r in recs), 2), "label_mode": "hard"})
        log.info("%s: top-1 %.2f%%", row_id, s["accuracy_mean"])

    if args.report_only:
        rows.write_markdown()
        plot(rows, "quadd_beam.png", "beam data: top-1 accuracy against set bytes")
        return
    add("full-fp32", "full", "none", "none", 32, lambda s: full["fp32"])
    add("full-uint8", "uint8", "none", "uniform", 8, lambda s: full["uint8"], qspace="raw dBm (exact 8-bit grid per feature)")
    add("full-3gpp", "3gpp", "none", "L1-RSRP", 7, lambda s: full["3gpp"], qspace="3GPP grid (1 dB)")
    for ipc in args.beam_ipc:
        def rnd(s, ipc=ipc):
            return make_set(work, f"random-ipc{ipc}", "beam", None, None, "random", ipc, {}, s)

        def dm(s, ipc=ipc):
            return make_set(work, f"dm-fp32-ipc{ipc}", "beam", None, None, "dm", ipc, dm_args, s)

        add(f"random-fp32-ipc{ipc}", "random", "none", "none", 32, rnd, ipc)
        add(f"dm-fp32-ipc{ipc}", "fp32", "dm", "none", 32, dm, ipc)
        for bits in args.beam_bits:
            def qd(s, ipc=ipc, bits=bits):
                return make_set(work, f"dm-quadd-uniform{bits}-ipc{ipc}", "beam", None, None, "dm", ipc,
                                {**dm_args, **qargs("uniform", bits, "channel", space=space)}, s)

            add(f"quadd-uniform{bits}-ipc{ipc}", "quadd", "dm", "uniform", bits, qd, ipc)
            add(f"posthoc-uniform{bits}-ipc{ipc}", "posthoc", "dm", "uniform", bits,
                lambda s, dm=dm, bits=bits: make_compressed(dm(s), "uniform", bits, granularity="channel", space=space), ipc)
            add(f"random-uniform{bits}-ipc{ipc}", "random", "none", "uniform", bits,
                lambda s, rnd=rnd, bits=bits: make_compressed(rnd(s), "uniform", bits, granularity="channel", space=space), ipc)
    rows.write_markdown()
    plot(rows, "quadd_beam.png", "beam data: top-1 accuracy against set bytes")
    print(f"wrote {rows.path}, {rows.path.with_suffix('.md')} and {RESULTS / 'quadd_beam.png'}")


# ----------------------------------------------------------------------------------------------
# findings and plots
# ----------------------------------------------------------------------------------------------


def gap(a: dict, b: dict) -> str:
    """'above'/'below' when a and b differ by more than two pooled standard deviations, else 'no gap'."""
    bar = two_pooled_std(a, b)
    d = a["accuracy_mean"] - b["accuracy_mean"]
    if a["seeds"] < 2 or b["seeds"] < 2:
        return f"not measurable with one seed ({d:+.2f})"
    n = min(a["seeds"], b["seeds"])
    few = "" if n >= CLAIM_SEEDS else f"; {n} seeds: an observation, a claim needs {CLAIM_SEEDS}"
    if bar == 0 or abs(d) <= bar:
        return f"no gap ({d:+.2f}, 2 pooled std = {bar:.2f}{few})"
    return f"{'above' if d > 0 else 'below'} by {d:+.2f} (> 2 pooled std = {bar:.2f}{few})"


def held_out_picks(name: str) -> dict[str, dict]:
    """label mode -> the kept ``tinyset budget`` search of part B (``NAME_search_MODE.json``)."""
    out = {}
    for mode in ("hard", "stored"):
        path = RESULTS / f"{name}_search_{mode}.json"
        if path.exists():
            out[mode] = json.loads(path.read_text())["search"]
    return out


def cifar_findings(rows: list[dict], searches: dict[str, dict] | None = None) -> list[str]:
    r = {x["row_id"]: x for x in rows}
    out = []
    rnd = r.get("A-random-fp32")
    for base in ("dm", "e2d"):
        fp = r.get(f"A-fp32-{base}")
        if fp and rnd:  # the base itself, before any bits are taken away
            out.append(f"(A) {base} fp32 vs the random real subset at equal bytes: {gap(fp, rnd)}.")
        for q in ("uniform", "apot"):
            q3, q2, p2 = r.get(f"A-quadd-{base}-{q}3"), r.get(f"A-quadd-{base}-{q}2"), r.get(f"A-posthoc-{base}-{q}2")
            if fp and q3:  # the paper's claim is closeness (within 1 point), so say both: the mean and the noise
                d = q3["accuracy_mean"] - fp["accuracy_mean"]
                out.append(f"(A) {base}, {q} 3-bit QuADD vs fp32: {d:+.2f} points, {'' if abs(d) <= 1 else 'not '}within "
                           f"the paper's 1 point{paired_wins(q3, fp)}; by the two-pooled-std rule: {gap(q3, fp)}.")
            if q2 and p2:
                out.append(f"(A) {base}, {q} 2-bit QuADD vs post-hoc: {gap(q2, p2)}{paired_wins(q2, p2)}.")
            f2 = r.get(f"A-quaddfrozen-{base}-{q}2")
            if f2 and p2:  # the loop with post-hoc's clip: what is left of the gap is what the loop does to the codes
                line = f"(A) {base}, {q} 2-bit QuADD with post-hoc's clip (MSE-calibrated, frozen) vs post-hoc: {gap(f2, p2)}"
                line += f"{paired_wins(f2, p2)}" + (f"; vs QuADD with its learned clip: {gap(f2, q2)}{paired_wins(f2, q2)}"
                                                    if q2 else "")
                out.append(line + ".")
    ric, r2 = r.get("A-random-uniform2-imageclip"), r.get("A-random-uniform2")
    if ric:  # E2D's 2-bit edge over the random subset: its images, or its clip per image?
        parts = [f"vs one clip per set: {gap(ric, r2)}{paired_wins(ric, r2)}"] if r2 else []
        for m in ("quadd", "posthoc"):
            e = r.get(f"A-{m}-e2d-uniform2")
            if e:
                parts.append(f"E2D {m} (a clip per image too) vs it: {gap(e, ric)}{paired_wins(e, ric)}")
        if parts:  # nothing to set it beside yet: no line
            out.append("(A) the random real subset at 2 bits with a clip per image: " + "; ".join(parts) + ".")
    for mode in ("hard", "stored"):
        ur = r.get(f"B-{mode}-uint8-random")
        quadd_rows = [x for x in rows if x.get("part") == "B" and x.get("label_mode") == mode and x.get("method") == "quadd"]
        for base in ("dm", "e2d"):
            fp = r.get(f"B-{mode}-fp32-{base}")
            pts = sorted((x for x in quadd_rows if x["base"] == base), key=lambda x: -x["bits"])
            if not (fp and pts):
                continue
            # every point is a row, so the best is picked on test accuracy after the fact: an upper bound on what
            # a user choosing blind would get (`tinyset budget` picks on a held-out split of the training set)
            best = max(pts, key=lambda x: x["accuracy_mean"])
            vs_fp, vs_ur = gap(best, fp), (gap(best, ur) if ur else None)
            holds = vs_fp.startswith("above") and bool(vs_ur and vs_ur.startswith("above"))
            listed = ", ".join(f"{x['ipc']}@{x['bits']}" for x in pts)
            line = (f"(B, {mode} labels) {base}: best of {len(pts)} points ({listed}; "
                    f"picked on test accuracy) {best['ipc']}@{best['bits']} bits, {best['accuracy_mean']:.2f} "
                    f"({best['student_bytes']} B) vs fp32 {fp['ipc']}@32 ({fp['student_bytes']} B): {vs_fp}")
            if ur:
                line += f"; vs the uint8 random real subset ({ur['ipc']}@8, {ur['student_bytes']} B): {vs_ur}"
            few = min(x["seeds"] for x in (best, fp, *([ur] if ur else []))) < CLAIM_SEEDS
            verdict = ("undecided (no uint8 random row yet)" if not ur else f"undecided (under {CLAIM_SEEDS} seeds)" if few
                       else "holds" if holds else "does not hold")
            out.append(line + f". Claim (above both): **{verdict}**.")
        # is the budget's gain distillation, or only "more images at fewer bits"? the random real subset at
        # the same width (one clip, post hoc) is the same trade without synthesis
        same = []
        for x in quadd_rows:
            rr = r.get(f"B-{mode}-random-uniform{x['bits']}")
            if rr:
                same.append(f"{x['base']} {x['ipc']}@{x['bits']} vs random {rr['ipc']}@{rr['bits']}: {gap(x, rr)}"
                            f"{paired_wins(x, rr)}")
            ri = r.get(f"B-{mode}-random-uniform{x['bits']}-imageclip") if x["base"] == "e2d" else None
            if ri:  # the same clips as E2D's: what is left is E2D's images
                same.append(f"{x['base']} {x['ipc']}@{x['bits']} vs random with a clip per image {ri['ipc']}@{ri['bits']}: "
                            f"{gap(x, ri)}{paired_wins(x, ri)}")
        if same:
            out.append(f"(B, {mode} labels) QuADD vs the random real subset at the same width: " + "; ".join(same) + ".")
        pick = (searches or {}).get(mode)
        if pick:  # what a user choosing blind gets: the held-out search's point, and that point's rows
            c = pick["chosen"]
            curve = ", ".join(f"{p['ipc']}@{p['bits']} {p['proxy_accuracy_mean']:.1f}" for p in pick["curve"])
            # the pick is a width: each base fits its own images per class there (E2D's clips per image cost a few)
            at = [x for x in rows if x.get("part") == "B" and x.get("label_mode") == mode and x["bits"] == c["bits"]]
            line = (f"(B, {mode} labels) `tinyset budget`'s held-out search (random real proxy sets, "
                    f"{pick['proxy']['seeds']} x {pick['proxy']['steps']} steps of {pick['proxy']['student']}, scored on "
                    f"{pick['proxy']['holdout_samples']} held-out training images; proxy % {curve}) picks "
                    f"{c['ipc']}@{c['bits']}")
            line += ("; the rows at that width: " + ", ".join(
                f"{x['method']} ({x['base']}) {x['ipc']}@{x['bits']} {x['accuracy_mean']:.2f} ± {x['accuracy_std']:.2f}"
                for x in at)) if at else ""
            out.append(line + ".")
    return out


# part B's series: at 32 bits each is its fp32 set, below it the quantized one (the uint8 and same-clip
# subsets are bars and controls, read from the table and the findings)
GRID_SERIES = (("random", ("random", "fp32"), "none"), ("QuADD-DM", ("quadd", "fp32"), "dm"),
               ("QuADD-E2D", ("quadd", "fp32"), "e2d"))


def part_b_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Part B's rows and the label modes they cover, in reading order (the grid and the picture share them)."""
    b = [x for x in rows if x.get("part") == "B"]
    return b, [m for m in ("hard", "stored") if any(x.get("label_mode") == m for x in b)]


def part_b_grid(rows: list[dict]) -> list[str]:
    """Part B as one grid: a line per width (bits), a column per label mode and series; each cell the
    row's accuracy and its images per class (each series fits its own under the budget)."""
    b, modes = part_b_rows(rows)
    if not b:
        return []
    at = {(x["label_mode"], x["bits"], x["method"], x["base"]): x for x in b}  # one row per key in part B
    head = ["bits"] + [f"{m}: {name}" for m in modes for name, _, _ in GRID_SERIES]
    out = ["", "**Part B at a glance** (accuracy %, mean ± std; in brackets the images per class that fit; "
           "`not run`: no row yet):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bits in sorted({x["bits"] for x in b}, reverse=True):
        cells = [str(bits)]
        for m in modes:
            for _, methods, base in GRID_SERIES:
                x = next((at[(m, bits, meth, base)] for meth in methods if (m, bits, meth, base) in at), None)
                cells.append(f"{x['accuracy_mean']:.2f} ± {x['accuracy_std']:.2f} ({x['ipc']})" if x else "not run")
        out.append("| " + " | ".join(cells) + " |")
    return out


def beam_findings(rows: list[dict]) -> list[str]:
    r = {x["row_id"]: x for x in rows}
    full = r.get("full-fp32")
    out = []
    if not full:
        return out
    g = r.get("full-3gpp")
    if g:
        out.append(f"3GPP-reported full data (7 bits, {g['compression']}x): {gap(g, full)} vs float32.")
    for x in rows:
        if x["method"] == "quadd" and x["compression"] >= 30:
            rnd = r.get(x["row_id"].replace("quadd", "random"))
            line = (f"QuADD {x['ipc']}/class at {x['bits']} bits ({x['compression']}x on set_bytes, headers included): "
                    f"{x['accuracy_mean'] - full['accuracy_mean']:+.2f} points vs the full data (target: within 5)")
            if rnd:
                line += f"; vs the random subset at the same bytes: {gap(x, rnd)}"
            out.append(line + ".")
        if x["method"] == "quadd":
            ph = r.get(x["row_id"].replace("quadd", "posthoc"))
            if ph:
                out.append(f"QuADD vs post-hoc at {x['ipc']}/class, {x['bits']} bits: {gap(x, ph)}.")
    return out


def plot_budget(rows: list[dict], filename: str, title: str, searches: dict[str, dict] | None = None) -> bool:
    """Part B's picture: accuracy against bits at the fixed budget, one panel per label mode, a line
    per (method, base) with each point's images per class written beside it, and the fp32 IPC-10
    sets and the uint8 random subset as dashed reference lines (they are the claim's bars)."""
    part_b, modes = part_b_rows(rows)
    if not part_b:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib missing: no plot")
        return False

    def is_bar(r: dict) -> bool:  # the claim's bars (fp32 sets, the uint8 subset) are lines across, not points
        return r["bits"] == 32 or r["method"] == "uint8"
    # one evenly spaced slot per width the rows or the searches have, fewer bits (more images) to the right
    widths = sorted({r["bits"] for r in part_b if not is_bar(r)}
                    | {p["chosen"]["bits"] for p in (searches or {}).values()}, reverse=True)
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), sharey=True, squeeze=False)
    colours: dict[str, str] = {}  # one colour per series in both panels

    def colour(name: str) -> str:
        return colours.setdefault(name, f"C{len(colours) % 10}")
    for ax, mode in zip(axes[0], modes):
        rs = [r for r in part_b if r["label_mode"] == mode]
        bars = [r for r in rs if is_bar(r)]
        for r in bars:
            label = f"{r['method']} ({r['base']}) {r['ipc']}/class at {r['bits']} bits"
            ax.axhline(r["accuracy_mean"], linestyle="--", linewidth=1, color=colour(f"{r['method']} {r['base']}"), label=label)
        lines: dict[str, list] = {}
        for r in rs:
            if r not in bars:
                lines.setdefault(f"{r['method']} ({r['base']})", []).append(r)
        series = sorted(lines.items())
        for j, (name, pts) in enumerate(series):
            pts = sorted(pts, key=lambda r: -r["bits"])
            dx = 0.12 * (j - (len(series) - 1) / 2)  # side by side, so equal points stay visible
            xs = [widths.index(r["bits"]) + dx for r in pts]
            ax.errorbar(xs, [r["accuracy_mean"] for r in pts],
                        yerr=[r["accuracy_std"] for r in pts], marker="o", capsize=3, label=name, color=colour(name))
            for x, r in zip(xs, pts):  # the label on the series' own side of the width, so neighbours don't collide
                ax.annotate(f"{r['ipc']}", (x, r["accuracy_mean"]), textcoords="offset points", color=colour(name),
                            xytext=(4 if dx >= 0 else -4, 4), ha="left" if dx >= 0 else "right", fontsize=7)
        pick = (searches or {}).get(mode)
        if pick:
            c = pick["chosen"]
            ax.axvline(widths.index(c["bits"]), linestyle=":", color="grey",
                       label=f"held-out search picks {c['ipc']}@{c['bits']}")
        ax.set_xticks(range(len(widths)), [str(b) for b in widths])
        ax.set_xlim(-0.5, len(widths) - 0.5)
        ax.set_xlabel("bits per value (number = images per class at the budget)")
        budget = max((r["student_bytes"] for r in rs if r["bits"] == 32), default=None)  # the fp32 set is the budget
        ax.set_title(f"{mode} labels" + (f": budget {budget:,} student bytes" if budget else ""))
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("test accuracy % (mean ± std, paired seeds)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(RESULTS / filename, dpi=110)
    plt.close(fig)
    return True


def plot(rows: Rows, filename: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the tables are the result; the plot is a convenience
        log.warning("matplotlib missing: no plot")
        return
    keys = [("set_bytes", "set_bytes (log)"), ("student_bytes", "student_bytes (log)")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    groups: dict[str, list] = {}
    for r in rows.data["rows"]:
        mode = f"{r['label_mode']} labels, " if r.get("label_mode") and r.get("part") == "B" else ""
        groups.setdefault(f"{r.get('part', '')} {mode}{r['method']} ({r['base']}, {r['quantizer']})".strip(), []).append(r)
    for ax, (key, label) in zip(axes, keys):
        for name, rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: r.get(key) or r["bytes"])
            ax.errorbar([r.get(key) or r["bytes"] for r in rs], [r["accuracy_mean"] for r in rs],
                        yerr=[r["accuracy_std"] for r in rs], marker="o", capsize=3, label=name,
                        linestyle="-" if len(rs) > 1 else "none")
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel("test accuracy %")
    fig.suptitle(title)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / filename, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["beam", "cifar"], required=True)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cache", default=str(HERE / "cache"), help="teacher cache (for pinning the teacher)")
    p.add_argument("--seeds", type=int, default=5, help="paired seeds per row (seed s re-synthesises / redraws)")
    p.add_argument("--work-dir", default=None,
                   help="where sets and seeds are kept (default benchmarks/work/quadd-<part>-v2); a kept set or seed "
                        "made under other options stops the run with one line, so try a variant in its own folder")
    p.add_argument("--protocol", default="rded", help="CIFAR evaluation protocol (`tinyset protocols`)")
    p.add_argument("--eval-set", nargs="*", default=[], metavar="KEY=VALUE", help="eval overrides, e.g. epochs=100")
    p.add_argument("--student", default="convnet3", help="CIFAR part A student")
    p.add_argument("--b-student", default="convnet:depth=3,width=32", help="CIFAR part B student (narrow: CPU)")
    p.add_argument("--dm-iterations", type=int, default=300)
    p.add_argument("--dm-image-lr", type=float, default=0.001,
                   help="CIFAR part: DM's Adam lr in [0, 1] pixel units (DM's default 0.01 turns 300 steps into noise)")
    p.add_argument("--soft-k", type=int, default=0, help="part B stored labels: top-k logits per image (0 = all)")
    p.add_argument("--soft-bits", type=int, default=8, help="part B stored labels: bits per logit (1-8 or 32)")
    p.add_argument("--modes", nargs="+", default=["hard", "stored"], choices=["hard", "stored"], help="part B label modes")
    p.add_argument("--b-bits", type=int, nargs="+", default=[8, 4, 3, 2], help="part B widths")
    p.add_argument("--beam-ipc", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--beam-bits", type=int, nargs="+", default=[4, 2])
    p.add_argument("--smoke", action="store_true", help="CIFAR part only: tiny sizes, writes quadd_<dataset>_smoke")
    p.add_argument("--dataset", default="cifar10", help="the CIFAR part's dataset; another (digits) only with --smoke")
    p.add_argument("--sections", nargs="+", default=["A", "B"], help="CIFAR parts to run")
    p.add_argument("--bases", nargs="+", default=["dm", "e2d"], help="CIFAR bases to run")
    p.add_argument("--only", nargs="+", metavar="PATTERN",
                   help="CIFAR: run only the rows whose id matches one of these shell patterns "
                        "(e.g. 'A-fp32-*' 'A-*-uniform3' 'A-*2'); the others are left for a later run")
    p.add_argument("--report-only", action="store_true", help="beam: rewrite the table, findings and plot from the rows already there")
    add_teacher_args(p, "cifar10-convnet3")
    add_max_minutes(p)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    global DEADLINE
    DEADLINE = Deadline(args.max_minutes)
    t0 = time.perf_counter()
    try:
        (cifar if args.part == "cifar" else beam)(args)
    except TimeUp:
        return  # the rows and seeds written so far are saved; rerunning the command continues
    log.info("done in %.0fs", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
