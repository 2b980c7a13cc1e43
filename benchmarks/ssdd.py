"""Self-supervised distillation for transfer, side by side at equal storage: CIFAR-10 without its
labels distilled by KRR-ST and the boosted form (and its ablations), each set used to pre-train a
fresh ConvNet by MSE to its targets, then linear probe and fine-tune on CIFAR-10 itself, MNIST
(32x32, 3 channels) and Imagenette (resized to 32x32); the random real subset (teacher features as
targets) and no pre-training under the same protocol.

    python benchmarks/ssdd.py --data-root ../shared/data            # full CPU-scale run
    python benchmarks/ssdd.py --data-root ../shared/data --smoke    # minutes: proves the path works

Every method gets the storage of ``--m`` KRR-ST pairs (m images + m d-dim targets), expressed as a
budget in images' worth of floats; the boosted variants fill it with bases, coefficients and view
networks. Sets are distilled once (seed 0) into ``benchmarks/runs/NAME/`` and reused; rows are
written as they finish and a rerun skips rows already in ``results/NAME.json``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
from pathlib import Path

import torch

from common import Deadline, Rows, add_max_minutes, command_line
from tinyset.config import DataConfig, RunConfig
from tinyset.data import load_dataset
from tinyset.data.base import Dataset
from tinyset.methods import METHODS as METHOD_REGISTRY
from tinyset.eval.transfer import AdaptedSplit, TransferConfig, evaluate_transfer
from tinyset.ssl import SSLConfig, get_ssl_teacher
from tinyset.ssl.pipeline import distill_ssl, load_pretrain_pairs

HERE = Path(__file__).parent
log = logging.getLogger("benchmarks.ssdd")

METHODS = {
    "no_pretrain": None,
    "random": ("ssl_random", {}),
    "krr_st": ("krr_st", {}),
    "ssdd": ("ssdd", {}),
    "ssdd_random_bases": ("ssdd", {"init_bases": "random"}),
    "ssdd_stored_targets": ("ssdd", {"approx": False}),
    "ssdd_no_views": ("ssdd", {"views": [0]}),
}
# (name, dataset spec relative to the data root, transfer modes)
TARGETS = {
    "cifar10": ("cifar10", ("linear",)),
    "mnist": ("mnist", ("linear", "finetune")),
    "imagenette": ("imagefolder:{root}/imagenette-128", ("linear", "finetune")),
}
CLAIMS = [  # (claim, better, worse, kind)
    ("boosted beats KRR-ST at equal storage", "ssdd", "krr_st", "beats"),
    ("KRR-ST beats the random subset", "krr_st", "random", "beats"),
    ("PCA bases beat random bases", "ssdd", "ssdd_random_bases", "beats"),
    ("view networks roughly match stored rotated targets (at lower storage per image)", "ssdd", "ssdd_stored_targets", "matches"),
    ("predefined views help", "ssdd", "ssdd_no_views", "beats"),
]


def settings(smoke: bool) -> dict:
    if smoke:
        return dict(teacher=SSLConfig(model="convnet:depth=3,width=16", epochs=1, batch_size=256, proj_dim=128),
                    method=dict(steps=3, pool_size=1, pool_reinit=2, model="convnet:depth=3,width=16", batch_size=64,
                                image_bases=16, repr_bases=16, approx_steps=100, pca_samples=500),
                    transfer=TransferConfig(model="convnet:depth=3,width=16", seeds=2, pretrain_epochs=2, probe_steps=50,
                                            finetune_epochs=1, max_train=500, max_test=500),
                    source_limit=1000)
    return dict(teacher=SSLConfig(model="convnet:depth=3,width=32", epochs=10, batch_size=256, proj_dim=1024),
                method=dict(steps=200, pool_size=4, pool_reinit=100, model="convnet:depth=3,width=32", batch_size=256,
                            image_bases=200, repr_bases=200, approx_steps=2000, pca_samples=5000),
                transfer=TransferConfig(model="convnet:depth=3,width=64", seeds=3, pretrain_epochs=50, probe_steps=300,
                                        finetune_epochs=5, max_train=5000, max_test=2000),
                source_limit=None)


def claim_lines(rows: list[dict]) -> list[str]:
    """Each claim per target: holds / does not hold on linear-probe accuracy; a gap under two
    standard deviations (the larger of the two rows') is no gap."""
    out = []
    for target in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["method"]: r for r in rows if r["dataset"] == target}
        for text, a, b, kind in CLAIMS:
            if a not in by or b not in by:
                continue
            ra, rb = by[a], by[b]
            gap = ra["accuracy_mean"] - rb["accuracy_mean"]
            tol = 2 * max(ra["accuracy_std"], rb["accuracy_std"])
            ok = gap > tol if kind == "beats" else gap >= -tol
            out.append(f"claim, {target}: {text}: **{'holds' if ok else 'does not hold'}** ({a} {ra['accuracy_mean']:.2f} ± "
                       f"{ra['accuracy_std']:.2f} vs {b} {rb['accuracy_mean']:.2f} ± {rb['accuracy_std']:.2f}, linear probe)")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--m", type=int, default=None, help="storage of m KRR-ST pairs for every method (100; smoke 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr of every learned set (the same for all methods)")
    p.add_argument("--targets", nargs="+", default=list(TARGETS))
    p.add_argument("--only", nargs="*", help="limit to these methods")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, results/ssdd_smoke.*")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    add_max_minutes(p)
    args = p.parse_args()
    deadline = Deadline(args.max_minutes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    name = "ssdd_smoke" if args.smoke else "ssdd"
    args.m = args.m or (10 if args.smoke else 100)
    st = settings(args.smoke)
    src = load_dataset("cifar10", DataConfig(dataset="cifar10", data_root=args.data_root))
    if st["source_limit"]:
        src = Dataset(src.info, AdaptedSplit(src.train, src.info.shape, st["source_limit"]), src.test)
    scfg = st["teacher"]
    scfg.cache_dir = args.cache
    teacher = get_ssl_teacher(src, scfg, args.device, progress=False)
    chw = math.prod(src.info.shape)
    budget = args.m * (chw + teacher.dim) / chw
    tcfg = st["transfer"]
    subset = f" ({st['source_limit']} images, evenly spaced)" if st["source_limit"] else ""
    notes = [
        f"Source: CIFAR-10 training set without labels{subset}; "
        f"teacher: Barlow Twins {scfg.model} ({teacher.dim}-d), {scfg.epochs} epochs, final loss {teacher.reference.get('final_loss')}.",
        f"Storage: every method gets {budget:.2f} images' worth of float32 ({args.m} KRR-ST pairs of a 3x32x32 image and a "
        f"{teacher.dim}-d target); ssdd variants: U={st['method']['image_bases']} image bases at 16x16, V={st['method']['repr_bases']} "
        f"representation bases, rotations 0/90/180/270, V->4->V view networks. 'images' = distilled images m (pre-training pairs = m x views).",
        f"Distillation: {st['method']['steps']} outer steps, pool of {st['method']['pool_size']} {st['method']['model']} re-initialised after "
        f"{st['method']['pool_reinit']} steps, AdamW lr {args.lr} linearly decayed for every method (CPU scale; the papers run far longer).",
        f"Transfer: a fresh {tcfg.model} pre-trained {tcfg.pretrain_epochs} epochs by MSE to the targets (AdamW {tcfg.pretrain_lr}); "
        f"linear probe = {tcfg.probe_steps} full-batch Adam steps on standardised frozen features; fine-tune = {tcfg.finetune_epochs} "
        f"epochs AdamW {tcfg.finetune_lr}, pad-crop + flip. Targets resized to 32x32 RGB; {tcfg.max_train} train / {tcfg.max_test} "
        f"test images each (evenly spaced). accuracy = linear probe, finetune = fine-tune; mean ± std over {tcfg.seeds} pre-training seeds.",
        "A gap under two standard deviations is no gap.",
    ]
    columns = [("dataset", "target"), ("method", "method"), ("images", "images m"), ("pretrain_pairs", "pre-training pairs"),
               ("stored_floats", "stored floats"), ("seeds", "seeds"), ("accuracy", "linear probe % (mean ± std)"),
               ("finetune", "fine-tune % (mean ± std)"), ("synthesis_seconds", "synthesis s"), ("approx_error", "view-net rel. error")]
    rows = Rows(name, "Self-supervised distillation for transfer (source CIFAR-10, no labels)", command_line(), notes, columns)
    runs = HERE / "runs" / name
    methods = [m for m in METHODS if not args.only or m in args.only]
    sets = {}
    for mname in methods:
        if METHODS[mname] is None:
            sets[mname] = (None, None, {"stored_floats": 0, "synthesis": {"m": 0, "seconds": 0.0}})
            continue
        method, extra = METHODS[mname]
        out = runs / mname
        if not (out / "manifest.json").exists():
            if deadline.passed():
                break
            cfg = RunConfig(method=method, device=args.device, seed=0)
            known = {f.name for f in dataclasses.fields(METHOD_REGISTRY.get(method).Config)}  # ssdd-only knobs stay out of krr_st
            cfg.method_args = {k: v for k, v in {**st["method"], "image_lr": args.lr, "target_lr": args.lr, "budget": budget,
                                                 **extra}.items() if k in known}
            distill_ssl(cfg, out, overwrite=True, progress=False, ds=src, ssl_override=scfg)
        sets[mname] = load_pretrain_pairs(out)
    for tname in args.targets:
        spec, modes = TARGETS[tname]
        tds = load_dataset(spec.format(root=args.data_root),
                           DataConfig(dataset=spec, data_root=args.data_root, image_size=src.info.image_size))
        tc = TransferConfig(**{**tcfg.__dict__, "modes": modes})
        for mname in methods:
            if rows.has(dataset=tname, method=mname) or mname not in sets or deadline.passed():
                continue
            x, y, man = sets[mname]
            rep = evaluate_transfer(x, y, src.info, tds, tc, args.device, seed=0)
            syn = man["synthesis"]
            row = {"dataset": tname, "method": mname, "ipc": args.m, "bits": 32, "student": tc.model,
                   "seeds": tc.seeds, "accuracy_mean": rep["linear"]["mean"], "accuracy_std": rep["linear"]["std"],
                   "linear_accuracies": rep["linear"]["accuracies"], "synthesis_seconds": syn.get("seconds", 0.0),
                   "images": syn.get("m", 0), "pretrain_pairs": rep["pretrain_pairs"], "stored_floats": man["stored_floats"],
                   "budget_floats": budget * chw,
                   "approx_error": statistics.fmean(syn["approx_relative_error"].values()) if syn.get("approx_relative_error") else None}
            if "finetune" in rep:
                row.update(finetune_mean=rep["finetune"]["mean"], finetune_std=rep["finetune"]["std"],
                           finetune=f"{rep['finetune']['mean']:.2f} ± {rep['finetune']['std']:.2f}")
            rows.notes = notes + claim_lines(rows.data["rows"] + [row])
            rows.add(row)
            log.info("%s -> %s: linear %.2f", mname, tname, row["accuracy_mean"])
    rows.notes = notes + claim_lines(rows.data["rows"])
    rows.write_markdown()
    print((rows.path.with_suffix(".md")).read_text())


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
