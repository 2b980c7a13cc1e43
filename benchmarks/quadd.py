"""QuADD: distillation under a bit budget. Three parts, one rows file each:

(A) CIFAR-10, equal IPC 10 at 32/8/4/3/2 bits: ``fp32``, ``posthoc`` (tinyset compress of the fp32
    set, calibrated clip) and ``quadd`` (quantizer in the loop), with DM and E2D as the base,
    uniform at 8/4 bits and uniform + APoT at 3/2 bits.
(B) CIFAR-10, fixed budget = IPC 10 at 32 bits (``ipc10@32``): the budget planner's images per
    class at 8/4/3/2 bits (40, 80, 106, 159: 160@2 is over by the labels and clip bytes), QuADD on
    both bases, the quantized random real subset (``random``), and the honest 8-bit points
    (``uint8``: the random real subset and the DM set stored as 8-bit codes).
(C) beam data (``tinyset.data.beam``): full data at 32 and 8 bits, random subsets, DM, QuADD and
    post-hoc at several compression ratios; MLP students, hard labels, top-1 and top-3.

    python benchmarks/quadd.py --part beam
    python benchmarks/quadd.py --part cifar --data-root ../shared/data --cache benchmarks/cache
    python benchmarks/quadd.py --part cifar --smoke      # a minutes-long check of the script

``bytes`` = every stored byte a student needs (data or codes + quantizer state + labels packed at
ceil(log2 K) bits; fp32 rows count float32 data + the same packed labels). ``compression`` =
bytes of the reference (the fp32 IPC-10 set for CIFAR, the full float32 data for beam) / bytes.
Rows are written as they finish; a rerun skips rows already in the results file."""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path

import torch

from common import RESULTS, WORK, Deadline, Rows, TimeUp, add_max_minutes, command_line
from tinyset.artifact import load_artifact
from tinyset.artifact.decoders import label_bits
from tinyset.budget import parse_budget, plan_budget
from tinyset.compress import CompressConfig, compress_artifact
from tinyset.config import DataConfig, EvalConfig, RunConfig, TeacherConfig
from tinyset.data import load_dataset
from tinyset.data.base import TensorSplit
from tinyset.data.beam import topk_accuracy
from tinyset.eval.protocol import eval_spec, train_student
from tinyset.kd import build_kd_loss
from tinyset.models import get_model
from tinyset.eval.trainer import train
from tinyset.pipeline import distill
from tinyset.teacher import get_teacher
from tinyset.utils.seeding import derive_seed

HERE = Path(__file__).parent
log = logging.getLogger("benchmarks.quadd")


class QuaddRows(Rows):
    def key(self, row):
        return (row["dataset"], row["row_id"])


def labels_bytes(n: int, k: int) -> int:
    return (n * label_bits(k) + 7) // 8


def honest_bytes(art) -> int:
    """Stored bytes with labels packed (what a quantized artifact holds; fp32 artifacts keep int64
    labels, which would flatter every compression ratio)."""
    if art.decoder["name"] == "quantized":
        return art.total_bytes
    x, y = art.images, art.labels
    k = (art.manifest.get("dataset_info") or {}).get("num_classes") or int(y.max()) + 1
    return 4 * x.numel() + labels_bytes(len(y), k)


# ----------------------------------------------------------------------------------------------
# shared: make a set (distill / compress) once, cached under benchmarks/work
# ----------------------------------------------------------------------------------------------


DEADLINE = Deadline(None)  # --max-minutes; checked before every synthesis, compression and row


def make_set(work: Path, name: str, ds_name: str, data_root, tcfg, method: str, ipc: int, margs: dict) -> Path:
    out = work / name
    if not out.exists():
        DEADLINE.check()
        # beam sets need no teacher (tcfg None): the default config, never used, keeps RunConfig whole
        cfg = RunConfig(method=method, ipc=ipc, device="cpu", teacher=tcfg or TeacherConfig(), evaluate=False,
                        data=DataConfig(dataset=ds_name, data_root=data_root))
        cfg.method_args = {**margs}
        if method in ("e2d", "sre2l"):
            cfg.method_args.setdefault("log_every", 0)
        distill(cfg, out, progress=False)
    return out


def make_compressed(work: Path, src: Path, quantizer: str, bits: int, calibrate: int = 100, granularity="tensor") -> Path:
    out = work / f"{src.name}-{quantizer}{bits}{'' if calibrate else '-raw'}"
    if not out.exists():
        DEADLINE.check()
        compress_artifact(src, out, CompressConfig(quantizer=quantizer, bits=bits, calibrate_steps=calibrate,
                                                   granularity=granularity))
    return out


def qargs(name, bits, gran="tensor"):
    return {"quantizer": {"name": name, "bits": bits, "granularity": gran}}


# ----------------------------------------------------------------------------------------------
# (A) + (B): CIFAR-10
# ----------------------------------------------------------------------------------------------


def cifar(args) -> None:
    smoke = args.smoke
    if smoke:
        torch.set_num_threads(1)
    ds = load_dataset("cifar10", DataConfig(dataset="cifar10", data_root=args.data_root))
    ready = (Path(args.cache) / "READY").exists()
    if smoke and not ready:  # the script's check: a tiny teacher, trained in seconds
        tcfg = TeacherConfig(model="convnet:depth=3,width=16", epochs=1, cache_dir=str(WORK / "smoke-cache"))
    else:
        tcfg = TeacherConfig(model="convnet3", epochs=10, cache_dir=args.cache)
    teacher = get_teacher(ds, tcfg, "cpu", progress=False)
    ipc0 = 1 if smoke else 10
    seeds = 1 if smoke else args.seeds
    epochs = 2 if smoke else args.epochs
    dm_args = {"iterations": 3 if smoke else args.dm_iterations, "batch_real": 16 if smoke else 64}
    e2d_args = {"iterations": 3 if smoke else 200, "class_stats": not smoke}
    bases = {"dm": ("dm", dm_args), "e2d": ("e2d", e2d_args)}
    student = args.student
    work = WORK / ("quadd-cifar-smoke" if smoke else "quadd-cifar")
    name = "quadd_cifar10_smoke" if smoke else "quadd_cifar10"
    k = ds.info.num_classes
    ref_bytes = 4 * ipc0 * k * math.prod(ds.info.shape) + labels_bytes(ipc0 * k, k)
    notes = [
        f"CIFAR-10; teacher {tcfg.model} ({tcfg.epochs} epochs, {teacher.reference.get('test_accuracy') or 0:.2f}% test) gives "
        f"the soft labels of every student and E2D's base. Student {student}, {epochs} epochs, soft labels (KD T=4), "
        "RandomResizedCrop 0.5-1 + flip + CutMix, AdamW lr 0.01; last-epoch accuracy, mean ± std over seeds.",
        f"Sized for a 2-core CPU: DM with a width-32 ConvNet-3 embedding net (instance norm), {dm_args['iterations']} "
        f"iterations, {dm_args['batch_real']} real images per class per step (the paper: 20,000 iterations, 256); "
        "E2D 200 iterations with early stop; a narrow student.",
        f"bytes: every stored byte (codes + clips + labels at 4 bits; fp32 rows: float32 pixels + the same labels). "
        f"compression = {ref_bytes} B (fp32, IPC {ipc0}) / bytes.",
        "posthoc = `tinyset compress` of the fp32 set (clip calibrated for 100 Adam steps on MSE); quadd = the "
        "quantizer in the loop, started from quantized real images. uint8 = stored as 8-bit codes.",
        "A gap under two standard deviations is no gap.",
    ]
    cols = [("part", "part"), ("method", "method"), ("base", "base"), ("quantizer", "quantizer"), ("ipc", "IPC"),
            ("bits", "bits"), ("bytes", "bytes"), ("compression", "compression x"), ("seeds", "seeds"),
            ("accuracy", "accuracy % (mean ± std)"), ("synthesis_seconds", "synthesis s")]
    rows = QuaddRows(name, "QuADD on CIFAR-10: accuracy against bits and bytes" + (" (smoke check)" if smoke else ""),
                     command_line(), notes, cols)

    def evaluate(row_id, part, method, base, quantizer, path, bits, seconds=None):
        DEADLINE.check()
        if rows.has(row_id=row_id):
            return
        art = load_artifact(path)
        ecfg = EvalConfig(student=student, epochs=epochs, lr=0.01, weight_decay=0.01, batch_size=50, loss="kd",
                          temperature=4.0, seeds=seeds, crop_scale=(0.5, 1.0), cutmix=1.0, random_baseline=False)
        accs = [train_student(art.images, art.labels, ds, teacher.model, ecfg, "soft", derive_seed(0, "eval", s), "cpu",
                              progress=False, desc=row_id) for s in range(seeds)]
        nbytes = honest_bytes(art)
        syn = art.manifest.get("synthesis") or {}
        rows.add({"dataset": "cifar10", "row_id": row_id, "part": part, "method": method, "base": base,
                  "quantizer": quantizer, "ipc": len(art.labels) // k, "bits": bits, "bytes": nbytes,
                  "compression": round(ref_bytes / nbytes, 2), "student": student, "seeds": seeds,
                  "accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.stdev(accs) if seeds > 1 else 0.0,
                  "accuracies": accs, "synthesis_seconds": seconds if seconds is not None else syn.get("seconds"),
                  "artifact": str(path)})
        log.info("%s: %.2f%%", row_id, statistics.fmean(accs))

    # (A) equal IPC
    widths = [(8, ["uniform"]), (4, ["uniform"]), (3, ["uniform", "apot"]), (2, ["uniform", "apot"])]
    if smoke:
        widths = [(3, ["apot"]), (2, ["uniform"])] if "dm" in args.bases else [(2, ["uniform"])]
    bases = {b: bases[b] for b in args.bases}
    for base, (method, margs) in bases.items():
        if "A" not in args.sections:
            break
        fp = make_set(work, f"{base}-fp32-ipc{ipc0}", "cifar10", args.data_root, tcfg, method, ipc0, margs)
        evaluate(f"A-fp32-{base}", "A", "fp32", base, "none", fp, 32)
        for bits, qs in widths:
            for q in qs:
                evaluate(f"A-posthoc-{base}-{q}{bits}", "A", "posthoc", base, q, make_compressed(work, fp, q, bits), bits)
                gran = "image" if method == "e2d" else "tensor"
                qd = make_set(work, f"{base}-quadd-{q}{bits}-ipc{ipc0}", "cifar10", args.data_root, tcfg, method, ipc0,
                              {**margs, **qargs(q, bits, gran)})
                evaluate(f"A-quadd-{base}-{q}{bits}", "A", "quadd", base, q, qd, bits)

    # (B) fixed budget = the fp32 set at ipc0
    budget = parse_budget(f"ipc{ipc0}@32", ds.info.shape, k)
    plan = plan_budget(budget, ds.info.shape, k, (32, 8, 4, 3, 2) if not smoke else (32, 2))
    for opt in plan.options:
        if opt.bits == 32 or opt.ipc < 1 or "B" not in args.sections:
            continue
        b, n = opt.bits, opt.ipc
        rnd = make_set(work, f"random-ipc{n}", "cifar10", args.data_root, tcfg, "random", n, {})
        evaluate(f"B-random-uniform{b}", "B", "random", "none", "uniform", make_compressed(work, rnd, "uniform", b), b)
        if b == 8:  # the honest 8-bit points: real pixels are 8-bit already
            evaluate("B-uint8-random", "B", "uint8", "none", "uniform", make_compressed(work, rnd, "uniform", 8, calibrate=0), 8)
            dm_fp = make_set(work, f"dm-fp32-ipc{n}", "cifar10", args.data_root, tcfg, "dm", n, dm_args)
            evaluate("B-uint8-dm", "B", "uint8", "dm", "uniform", make_compressed(work, dm_fp, "uniform", 8, calibrate=0), 8)
        for base, (method, margs) in bases.items():
            gran = "image" if method == "e2d" else "tensor"
            qd = make_set(work, f"{base}-quadd-uniform{b}-ipc{n}", "cifar10", args.data_root, tcfg, method, n,
                          {**margs, **qargs("uniform", b, gran)})
            evaluate(f"B-quadd-{base}-uniform{b}", "B", "quadd", base, "uniform", qd, b)
    rows.notes += ["Findings (computed from the rows above):"] + cifar_findings(rows)
    rows.write_markdown()
    plot(rows, f"{name}.png", "CIFAR-10: accuracy against stored bytes")
    print(f"wrote {rows.path}, {rows.path.with_suffix('.md')} and {RESULTS / (name + '.png')}")


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


def beam(args) -> None:
    # tiny MLPs: one thread (on a shared 2-core machine, more threads made each step ~100x slower)
    torch.set_num_threads(1)
    ds = load_dataset("beam")
    k = ds.info.num_classes
    work = WORK / "quadd-beam"
    full_n = len(ds.train)
    ref_bytes = 4 * ds.train.x.numel() + labels_bytes(full_n, k)
    seeds = args.seeds
    dm_args = {"iterations": args.dm_iterations, "batch_real": 128}
    notes = [
        f"beam data (`tinyset.data.beam`, defaults: 32-antenna ULA, Set A 32 narrow DFT beams, Set B 8 wide beams, "
        f"{full_n} train / {len(ds.test)} test users, seed 0): input L1-RSRP (dBm) of Set B, label the best Set-A beam.",
        "Student: MLP (2 hidden layers of 128, BatchNorm), hard labels (CE), AdamW lr 0.003, ~2,000 steps "
        "(10-300 epochs by set size); top-1 and top-3 test accuracy, mean ± std over seeds.",
        f"DM: fresh MLP embedding nets (hidden 128), {dm_args['iterations']} iterations, {dm_args['batch_real']} real "
        "samples per class per step, started from real samples. QuADD: uniform quantizer, one clip per feature "
        "(granularity channel) in normalised units, learned in the loop. posthoc: the DM set compressed the same way.",
        f"bytes: codes + clips + labels at {label_bits(k)} bits (float rows: float32 features + the same labels). "
        f"compression = full float32 data ({ref_bytes} B) / bytes.",
        "A gap under two standard deviations is no gap.",
    ]
    cols = [("method", "method"), ("base", "base"), ("quantizer", "quantizer"), ("ipc", "per class"), ("bits", "bits"),
            ("bytes", "bytes"), ("compression", "compression x"), ("seeds", "seeds"), ("accuracy", "top-1 % (mean ± std)"),
            ("top3", "top-3 %"), ("synthesis_seconds", "synthesis s")]
    rows = QuaddRows("quadd_beam", "QuADD on beam-management data: accuracy against bits and bytes", command_line(), notes, cols)

    def add(row_id, method, base, quantizer, x, y, bits, nbytes, seconds=None, ipc=None):
        if not rows.has(row_id=row_id):
            DEADLINE.check()
        if rows.has(row_id=row_id):
            return
        res = [beam_student(x, y, ds, derive_seed(0, "eval", s)) for s in range(seeds)]
        t1 = [r[0] for r in res]
        rows.add({"dataset": "beam", "row_id": row_id, "method": method, "base": base, "quantizer": quantizer,
                  "ipc": ipc, "bits": bits, "bytes": nbytes, "compression": round(ref_bytes / nbytes, 1),
                  "student": "mlp:hidden=128,depth=2", "seeds": seeds, "accuracy_mean": statistics.fmean(t1),
                  "accuracy_std": statistics.stdev(t1) if seeds > 1 else 0.0, "accuracies": t1,
                  "top3": round(statistics.fmean(r[1] for r in res), 2), "synthesis_seconds": seconds})
        log.info("%s: top-1 %.2f%%", row_id, statistics.fmean(t1))

    if args.report_only:
        rows.notes += ["Findings (computed from the rows above):"] + beam_findings(rows)
        rows.write_markdown()
        plot(rows, "quadd_beam.png", "beam data: top-1 accuracy against stored bytes")
        return
    x_full, y_full = ds.train.x, ds.train.targets
    add("full-fp32", "full", "none", "none", x_full, y_full, 32, ref_bytes)
    from tinyset.compress import quantize_set

    dec, q = quantize_set(x_full, y_full, ds.info, CompressConfig(quantizer="uniform", bits=8, granularity="channel",
                                                                  calibrate_steps=0), k)
    nb = sum(t.numel() * t.element_size() for t in q[0].values())
    add("full-uint8", "uint8", "none", "uniform", dec, y_full, 8, nb)
    for ipc in args.beam_ipc:
        rnd = make_set(work, f"random-ipc{ipc}", "beam", None, None, "random", ipc, {})
        art = load_artifact(rnd)
        add(f"random-fp32-ipc{ipc}", "random", "none", "none", art.images, art.labels, 32, honest_bytes(art), ipc=ipc)
        dm = make_set(work, f"dm-fp32-ipc{ipc}", "beam", None, None, "dm", ipc, dm_args)
        art = load_artifact(dm)
        add(f"dm-fp32-ipc{ipc}", "fp32", "dm", "none", art.images, art.labels, 32, honest_bytes(art),
            art.manifest["synthesis"]["seconds"], ipc)
        for bits in args.beam_bits:
            qd = make_set(work, f"dm-quadd-uniform{bits}-ipc{ipc}", "beam", None, None, "dm", ipc,
                          {**dm_args, **qargs("uniform", bits, "channel")})
            art = load_artifact(qd)
            add(f"quadd-uniform{bits}-ipc{ipc}", "quadd", "dm", "uniform", art.images, art.labels, bits, art.total_bytes,
                art.manifest["synthesis"]["seconds"], ipc)
            ph = load_artifact(make_compressed(work, dm, "uniform", bits, granularity="channel"))
            add(f"posthoc-uniform{bits}-ipc{ipc}", "posthoc", "dm", "uniform", ph.images, ph.labels, bits, ph.total_bytes, ipc=ipc)
            rq = load_artifact(make_compressed(work, rnd, "uniform", bits, granularity="channel"))
            add(f"random-uniform{bits}-ipc{ipc}", "random", "none", "uniform", rq.images, rq.labels, bits, rq.total_bytes, ipc=ipc)
    rows.notes += ["Findings (computed from the rows above):"] + beam_findings(rows)
    rows.write_markdown()
    plot(rows, "quadd_beam.png", "beam data: top-1 accuracy against stored bytes")
    print(f"wrote {rows.path}, {rows.path.with_suffix('.md')} and {RESULTS / 'quadd_beam.png'}")


def gap(a: dict, b: dict) -> str:
    """'above'/'below' when a and b differ by more than two pooled standard deviations, else 'no gap'."""
    pooled = math.sqrt((a["accuracy_std"] ** 2 + b["accuracy_std"] ** 2) / 2)
    d = a["accuracy_mean"] - b["accuracy_mean"]
    if a["seeds"] < 2 or b["seeds"] < 2:
        return f"not measurable with one seed ({d:+.2f})"
    if pooled == 0 or abs(d) <= 2 * pooled:
        return f"no gap ({d:+.2f}, 2 pooled std = {2 * pooled:.2f})"
    return f"{'above' if d > 0 else 'below'} by {d:+.2f} (> 2 pooled std = {2 * pooled:.2f})"


def cifar_findings(rows: Rows) -> list[str]:
    r = {x["row_id"]: x for x in rows.data["rows"]}
    out = []
    for base in ("dm", "e2d"):
        fp = r.get(f"A-fp32-{base}")
        for q in ("uniform", "apot"):
            q3, q2, p2 = r.get(f"A-quadd-{base}-{q}3"), r.get(f"A-quadd-{base}-{q}2"), r.get(f"A-posthoc-{base}-{q}2")
            if fp and q3:
                out.append(f"(A) {base}, {q} 3-bit QuADD vs fp32: {q3['accuracy_mean'] - fp['accuracy_mean']:+.2f} points "
                           f"(target: within 1).")
            if q2 and p2:
                out.append(f"(A) {base}, {q} 2-bit QuADD vs post-hoc: {gap(q2, p2)}.")
        lows = [x for x in rows.data["rows"] if x["part"] == "B" and x["method"] == "quadd" and x["base"] == base and x["bits"] < 8]
        u8 = r.get("B-uint8-dm") if base == "dm" else None
        if fp and lows:
            best = max(lows, key=lambda x: x["accuracy_mean"])
            line = f"(B) {base}: best low-bit point {best['ipc']}@{best['bits']} vs fp32 {fp['ipc']}@32: {gap(best, fp)}"
            if u8:
                line += f"; vs the uint8 DM set ({u8['ipc']}@8): {gap(best, u8)}"
            ur = r.get("B-uint8-random")
            if ur:
                line += f"; vs the uint8 random real subset: {gap(best, ur)}"
            out.append(line + ".")
    return out


def beam_findings(rows: Rows) -> list[str]:
    r = {x["row_id"]: x for x in rows.data["rows"]}
    full = r.get("full-fp32")
    out = []
    if not full:
        return out
    for x in rows.data["rows"]:
        if x["method"] == "quadd" and x["compression"] >= 30:
            out.append(f"QuADD {x['ipc']}/class at {x['bits']} bits ({x['compression']}x): "
                       f"{x['accuracy_mean'] - full['accuracy_mean']:+.2f} points vs the full data (target: within 5).")
        if x["method"] == "quadd":
            ph = r.get(x["row_id"].replace("quadd", "posthoc"))
            if ph:
                out.append(f"QuADD vs post-hoc at {x['ipc']}/class, {x['bits']} bits: {gap(x, ph)}.")
    return out


def plot(rows: Rows, filename: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the tables are the result; the plot is a convenience
        log.warning("matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list] = {}
    for r in rows.data["rows"]:
        groups.setdefault(f"{r['method']} ({r['base']}, {r['quantizer']})", []).append(r)
    for label, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["bytes"])
        ax.errorbar([r["bytes"] for r in rs], [r["accuracy_mean"] for r in rs], yerr=[r["accuracy_std"] for r in rs],
                    marker="o", capsize=3, label=label, linestyle="-" if len(rs) > 1 else "none")
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes (log)")
    ax.set_ylabel("test accuracy %")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / filename, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["beam", "cifar"], required=True)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--cache", default=str(Path(__file__).parent / "cache"), help="teacher cache (the ConvNet-3 teacher decoupled.py also uses)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=100, help="CIFAR student epochs")
    p.add_argument("--student", default="convnet:depth=3,width=64")
    p.add_argument("--dm-iterations", type=int, default=300)
    p.add_argument("--beam-ipc", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--beam-bits", type=int, nargs="+", default=[4, 2])
    p.add_argument("--smoke", action="store_true", help="CIFAR only: tiny sizes, writes quadd_cifar10_smoke")
    p.add_argument("--sections", nargs="+", default=["A", "B"], help="CIFAR parts to run")
    p.add_argument("--bases", nargs="+", default=["dm", "e2d"], help="CIFAR bases to run")
    p.add_argument("--report-only", action="store_true", help="beam: rewrite the table, findings and plot from the rows already there")
    add_max_minutes(p)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    global DEADLINE
    DEADLINE = Deadline(args.max_minutes)
    t0 = time.perf_counter()
    try:
        (cifar if args.part == "cifar" else beam)(args)
    except TimeUp:
        return  # the rows written so far are saved; rerunning the command continues
    log.info("done in %.0fs", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
