"""Self-supervised distillation for transfer, measured at CPU scale (issue 23): KRR-ST as its reference
runs it and the boosted form (bases + rotation views + approximation networks) with its ablations,
every row at equal stored floats, each set pre-training a fresh network that is then read out on
classes and images the source never showed.

- Source: CIFAR-10 classes 0-4 without labels, 10,000 evenly spaced training images.
- Teacher: Barlow Twins ConvNet-3 width 32 (512-d), 6 epochs, pinned (benchmarks/pinned.py,
  ``cifar10-05-barlow-convnet3w32``); its own linear-probe accuracy is the ``teacher`` row.
- Targets: CIFAR-10 classes 5-9 (unseen classes: linear probe on 3,000 / 1,000 images and a short
  fine-tune) and Imagenette at 32 px (linear probe, 3,000 / 1,000 images).
- Budget: the storage of ``--pairs`` KRR-ST image/target pairs (86: 308,224 floats). At that budget
  ssdd and ssdd_random_bases hold 117 images x 4 views, ssdd_stored_targets 52, ssdd_no_views 130,
  pixels_views 82 (pixels + raw targets, view networks on the targets), krr_st and random 86.
- Rows: none (no pre-training), random (real images, teacher features), krr_st, ssdd, ssdd_step0
  (PCA init + rotations + view networks, no optimisation: what distillation adds), ssdd_random_bases,
  ssdd_stored_targets (every view's coefficients stored, no view networks), ssdd_no_views,
  pixels_views (KRR-ST with the rotation views, no bases), teacher (the SSL teacher's own features).
- Seeds: ``--seeds`` (5) paired seeds; seed s re-distils every set with run seed s AND pre-trains the
  student with seed s. A row's accuracy is the mean over targets of the linear-probe accuracy; the
  per-target columns and the first and last KRR loss (mean over seeds) sit beside it.

    python benchmarks/ssdd.py --data-root ../shared/data --max-minutes 85   # the issue's protocol
    python benchmarks/ssdd.py --smoke                                       # seconds, on digits

Cost, measured on the 2-core CPU (2026-12-06): 60 min for all 10 rows x 5 seeds, per seed about 2-2.5
min for ssdd and ssdd_random_bases, about 1.5 for pixels_views and ssdd_stored_targets, 1 for krr_st and
ssdd_no_views, well under 1 for the rest. ``--steps 400`` multiplies the distilled rows' synthesis by about 4.

Seeds are kept in work/ as they finish and rows in results/ssdd.json, so a rerun of the same
command continues where the last one stopped (``--max-minutes`` stops cleanly between seeds)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import time
from pathlib import Path

from common import WORK, Deadline, Rows, add_max_minutes, claim_line, command_line, mean_std, paired_seeds
from tinyset.config import DataConfig, RunConfig
from tinyset.data import load_dataset
from tinyset.errors import TinysetError
from tinyset.utils.digest import json_digest
from tinyset.eval.transfer import (TransferConfig, TransferTarget, evaluate_transfer_targets, prepare_targets, probe_encoder,
                                   subset_dataset)
from tinyset.jobs.distill_ssl import distill_ssl, load_pretrain_pairs
from tinyset.methods import METHODS as METHOD_REGISTRY
from tinyset.methods.krr_st import krr_st_size
from tinyset.methods.ssdd import SSDDConfig, ssdd_size
from tinyset.models import get_model
from tinyset.models.encoder import encoder_from_model, feature_dim
from tinyset.teachers.ssl import SSLConfig, get_ssl_teacher

HERE = Path(__file__).parent
log = logging.getLogger("benchmarks.ssdd")
PINNED_TEACHER = "cifar10-05-barlow-convnet3w32"

# row -> (method, method_args over the shared settings); None: not a distilled set
ROWS: dict[str, tuple[str, dict] | None] = {
    "teacher": None,
    "none": None,
    "random": ("ssl_random", {}),
    "krr_st": ("krr_st", {}),
    "ssdd": ("ssdd", {}),
    "ssdd_step0": ("ssdd", {"steps": 0}),
    "ssdd_random_bases": ("ssdd", {"init_bases": "random"}),
    "ssdd_stored_targets": ("ssdd", {"approx": False}),
    "ssdd_no_views": ("ssdd", {"views": [0]}),
    "pixels_views": ("ssdd", {"init_bases": "none"}),
}
CLAIMS = [  # (claim, better, worse, kind): beats = gap > 2 pooled std; matches = gap >= -2 pooled std
    ("boosted beats KRR-ST at equal storage", "ssdd", "krr_st", "beats"),
    ("KRR-ST beats the random subset", "krr_st", "random", "beats"),
    ("the random subset beats no pre-training", "random", "none", "beats"),
    ("distillation beats its own initialisation", "ssdd", "ssdd_step0", "beats"),
    ("PCA bases beat random bases", "ssdd", "ssdd_random_bases", "beats"),
    ("view networks match stored rotated targets at equal storage", "ssdd", "ssdd_stored_targets", "matches"),
    ("predefined views help (with bases)", "ssdd", "ssdd_no_views", "beats"),
    ("predefined views help (pixels, no bases)", "pixels_views", "krr_st", "beats"),
]


def settings(smoke: bool) -> dict:
    """Everything that decides a row's numbers (the work folder is keyed by a hash of it)."""
    if smoke:  # digits: 16 px grey, seconds
        return dict(
            source="digits", pairs=12, seeds=2,
            teacher=dict(model="convnet:depth=2,width=8", epochs=1, batch_size=256, proj_dim=64),
            method=dict(steps=2, batch_size=64, pool_size=1, pool_reinit=2, model="convnet:depth=2,width=16",
                        image_bases=8, repr_bases=8, low_res=8, approx_steps=20, pca_samples=200, image_lr=1e-3,
                        target_lr=1e-3, real="live"),
            transfer=dict(model="convnet:depth=2,width=8", seeds=1, pretrain_steps=4, pretrain_batch=32, probe_steps=20,
                          finetune_epochs=1, finetune_batch=64, max_train=None, max_test=None))
    return dict(
        source="cifar10-05-10k", pairs=86, seeds=5, teacher=PINNED_TEACHER,
        # the outer loop: reference defaults (BN in eval mode, live teacher on pad-4 crop + flip, pool SGD
        # lr 0.1 / wd 1e-3, lr decayed linearly to 1e-3 of its start, no clamp) at CPU scale: fewer
        # steps, a smaller real batch, a pool of 4 replaced every 40 steps (reference 160k steps, 1,024,
        # 10 and 1,000)
        method=dict(steps=100, batch_size=256, pool_size=4, pool_reinit=40, model="convnet:depth=3,width=32",
                    image_bases=200, repr_bases=200, approx_steps=1000, pca_samples=2000, image_lr=1e-3, target_lr=1e-3,
                    real="live"),
        transfer=dict(model="convnet:depth=3,width=32", seeds=1, pretrain_steps=200, pretrain_batch=128, probe_steps=300,
                      finetune_epochs=3, finetune_batch=128, max_train=None, max_test=None))


def load_source(st: dict, data_root: str):
    if st["source"] == "digits":
        return subset_dataset(load_dataset("digits"), range(5), name="digits-c0-4")
    from pinned import SOURCES

    return SOURCES[st["source"]](data_root)


def load_targets(st: dict, data_root: str) -> list[TransferTarget]:
    if st["source"] == "digits":
        return [TransferTarget("digits_5_9", subset_dataset(load_dataset("digits"), range(5, 10), name="digits-c5-9"),
                               ("linear", "finetune"))]
    c10 = load_dataset("cifar10", DataConfig(dataset="cifar10", data_root=data_root))
    spec = f"imagefolder:{Path(data_root) / 'imagenette-128'}"
    nette = load_dataset(spec, DataConfig(dataset=spec, data_root=data_root, image_size=32))
    return [TransferTarget("cifar10_5_9", subset_dataset(c10, range(5, 10), 3000, 1000, name="cifar10-c5-9"),
                           ("linear", "finetune")),
            TransferTarget("imagenette", subset_dataset(nette, None, 3000, 1000, name="imagenette-32"), ("linear",))]


def get_teacher(st: dict, src, cache: str, device: str):
    """(SSLTeacher, SSLConfig that reloads it inside distill_ssl)."""
    if isinstance(st["teacher"], str):
        from pinned import load_pinned_ssl, paths

        t = load_pinned_ssl(st["teacher"], src, device, cache=cache)
        return t, SSLConfig(checkpoint=str(paths(st["teacher"])[0]), model=t.reference.get("model") or "convnet", cache_dir=cache)
    scfg = SSLConfig(**st["teacher"], cache_dir=cache)
    return get_ssl_teacher(src, scfg, device, progress=False), scfg


def method_args(st: dict, row: str, budget: float) -> tuple[str, dict]:
    method, extra = ROWS[row]
    known = {f.name for f in dataclasses.fields(METHOD_REGISTRY.get(method).Config)}  # ssdd-only knobs stay out of krr_st
    return method, {k: v for k, v in {**st["method"], "budget": budget, **extra}.items() if k in known}


def support_sizes(st: dict, shape, dim: int, budget_floats: float) -> dict[str, tuple[int, int]]:
    """row -> (images m, support pairs views x m) at the budget, before anything runs."""
    out = {}
    for row, spec in ROWS.items():
        if spec is None:
            continue
        method, args = method_args(st, row, 0)
        if method in ("krr_st", "ssl_random"):
            m = krr_st_size(budget_floats, shape, dim)
            out[row] = (m, m)
            continue
        cfg = SSDDConfig(**{k: v for k, v in args.items() if k != "budget"})
        views = tuple(cfg.views)
        cfg = dataclasses.replace(cfg, views=views, approx=bool(cfg.approx and len(views) > 1))
        low = shape[-1] if cfg.init_bases == "none" else int(cfg.low_res or shape[-1] // 2)
        m = ssdd_size(budget_floats, cfg, (shape[0], low, low), dim)
        out[row] = (m, m * len(views))
    return out


def pooled_claims(rows: list[dict]) -> list[str]:
    """Each claim: holds / does not hold on the mean linear-probe accuracy over targets; a gap within
    two pooled standard deviations is no gap."""
    by = {r["method"]: r for r in rows}
    return [claim_line(text, by[a], by[b], kind) for text, a, b, kind in CLAIMS if a in by and b in by]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def aggregate(row: str, recs: list[dict], st: dict, budget_floats: float, targets: list[TransferTarget], source: str) -> dict:
    per_seed = [statistics.fmean(r["linear"].values()) for r in recs]
    mean, std = mean_std(per_seed)
    out = {"dataset": source, "method": row, "ipc": st["pairs"], "bits": 32, "student": st["transfer"]["model"],
           "seeds": len(recs), "accuracy_mean": mean, "accuracy_std": std, "accuracies": per_seed,
           "synthesis_seconds": _mean(r.get("synthesis_seconds") for r in recs) or 0.0,
           "images": recs[0].get("m"), "pretrain_pairs": recs[0].get("pretrain_pairs"),
           "stored_floats": recs[0].get("stored_floats"), "budget_floats": budget_floats,
           "first_loss": _mean(r.get("first_loss") for r in recs), "last_loss": _mean(r.get("last_loss") for r in recs),
           "approx_error": _mean(r.get("approx_error") for r in recs),
           "approx_zero_shift_error": _mean(r.get("approx_zero_shift_error") for r in recs),
           "full_rank": all(r.get("full_rank", True) for r in recs), "seconds_per_seed": _mean(r.get("seconds") for r in recs)}
    for t in targets:
        for mode, prefix in (("linear", ""), ("finetune", "finetune_")):
            vals = [r[mode][t.name] for r in recs if t.name in r.get(mode, {})]
            if vals:
                m, s = mean_std(vals)
                out.update({f"{prefix}{t.name}_mean": m, f"{prefix}{t.name}_std": s, f"{prefix}{t.name}": f"{m:.2f} ± {s:.2f}"})
    if out["approx_error"] is not None:
        out["approx"] = f"{out['approx_error']:.3f} / {out['approx_zero_shift_error']:.3f}"
    for k in ("first_loss", "last_loss"):
        if out[k] is not None:
            out[k + "_str"] = f"{out[k]:.4f}"
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--only", nargs="*", help=f"limit to these rows ({', '.join(ROWS)})")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds (5; smoke 2)")
    p.add_argument("--steps", type=int, default=None, help="outer steps of every distilled set (100; a new protocol: its own work folder)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="pre-training steps of every set (200; a new protocol)")
    p.add_argument("--smoke", action="store_true", help="digits, tiny sizes, results/ssdd_smoke.*")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    add_max_minutes(p)
    args = p.parse_args()
    deadline = Deadline(args.max_minutes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    name = "ssdd_smoke" if args.smoke else "ssdd"
    st = settings(args.smoke)
    if args.steps is not None:
        st["method"]["steps"] = args.steps
        name += f"_steps{args.steps}"
    if args.pretrain_steps is not None:
        st["transfer"]["pretrain_steps"] = args.pretrain_steps
        name += f"_pre{args.pretrain_steps}"
    seeds = args.seeds or st["seeds"]
    tag = json_digest(st, 10)  # the work folder of this protocol (unchanged: st holds only JSON values)
    unknown = set(args.only or []) - set(ROWS)
    if unknown:
        raise TinysetError(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")

    src = load_source(st, args.data_root)
    teacher, scfg = get_teacher(st, src, args.cache, args.device)
    chw = math.prod(src.info.shape)
    budget_floats = st["pairs"] * (chw + teacher.dim)
    budget = budget_floats / chw  # in images' worth of floats, as method_args.budget takes it
    pool_p = feature_dim(encoder_from_model(get_model(st["method"]["model"], src.info)), src.info.shape)
    sizes = support_sizes(st, src.info.shape, teacher.dim, budget_floats)
    short = {r: s for r, (m, s) in sizes.items() if s > pool_p + 1}
    if short:
        msg = f"pool networks have {pool_p} features (+1 bias) but rows {short} have more support pairs: K_ss is rank-deficient"
        if not args.smoke:
            raise TinysetError(msg + "; widen the pool model")
        log.warning(msg)
    targets = load_targets(st, args.data_root)
    tcfg = TransferConfig(**st["transfer"])
    prepared = prepare_targets(targets, src.info, tcfg)
    mcfg = st["method"]
    notes = [
        f"Source: {src.info.name} ({len(src.train)} training images, labels never read). Teacher: "
        f"{teacher.reference.get('ssl', 'barlow_twins')} {teacher.reference.get('model')} ({teacher.dim}-d)"
        + (f", pinned {teacher.reference['pinned']}, linear probe on the source's test images "
           f"{teacher.reference['probe_accuracy']:.2f}%" if teacher.reference.get("pinned") else "") + ".",
        f"Storage: every row holds {budget_floats} floats = {st['pairs']} KRR-ST pairs ({chw}-float image + {teacher.dim}-d "
        f"target); images m / support pairs (views x m): " + ", ".join(f"{r} {m}/{s}" for r, (m, s) in sizes.items()) +
        (f"; pool features {pool_p} (+1 bias) >= every support, so K_ss can be full rank." if not short else
         f"; pool features {pool_p} (+1 bias) are fewer than the support of {', '.join(short)}: K_ss rank-deficient there."),
        f"Distillation: {mcfg['steps']} outer steps, real batch {mcfg['batch_size']} (pad-4 crop + flip, teacher run on the "
        f"augmented view, one quarter turn per image for the view rows), pool of {mcfg['pool_size']} {mcfg['model']} "
        f"(BatchNorm in eval mode in the outer step; SGD lr 0.1, wd 1e-3; replaced after {mcfg['pool_reinit']} steps), "
        f"AdamW lr {mcfg['image_lr']} decayed linearly to 1e-3 of it, no pixel clamp; ssdd: U=V={mcfg['image_bases']} bases, "
        f"image bases at half resolution, V->4->V view networks ({mcfg['approx_steps']} Adam steps).",
        f"Transfer: a fresh {tcfg.model} pre-trained {tcfg.pretrain_steps} steps (every set the same; batch {tcfg.pretrain_batch}, "
        f"AdamW {tcfg.pretrain_lr}, cosine) by MSE to the set's targets, once per seed for every target; each target "
        f"normalised by its own mean/std; linear probe = {tcfg.probe_steps} full-batch Adam steps on standardised frozen "
        f"features; fine-tune = {tcfg.finetune_epochs} epochs AdamW {tcfg.finetune_lr}, pad-crop + flip. Targets: "
        + ", ".join(f"{p.name} ({len(p.train)} / {len(p.test)} images, {'+'.join(p.modes)})" for p in prepared) + ".",
        f"accuracy = mean over targets of the linear-probe accuracy; mean ± std over {seeds} paired seeds (seed s "
        "re-distils every set and pre-trains the student with seed s). first/last loss = the KRR outer loss at the first "
        "and last step (mean over seeds; a step-0 set's loss is the first loss of its optimised twin). view nets = the "
        "approximation networks' relative error / the 'predict zero shift' baseline's. teacher = the SSL teacher's own "
        "frozen features under the same probe (not a distilled set).",
    ]
    columns = [("method", "row"), ("images", "images m"), ("pretrain_pairs", "pairs"), ("stored_floats", "stored floats"),
               ("seeds", "seeds"), ("accuracy", "mean linear probe % (mean ± std)")]
    columns += [(t.name, f"{t.name} linear %") for t in targets]
    columns += [(f"finetune_{t.name}", f"{t.name} fine-tune %") for t in targets if "finetune" in (t.modes or tcfg.modes)]
    columns += [("first_loss_str", "first loss"), ("last_loss_str", "last loss"), ("approx", "view nets / zero shift"),
                ("synthesis_seconds", "synthesis s")]
    title = f"Self-supervised distillation for transfer (source: {src.info.name}, no labels)"
    rows = Rows(name, title, command_line(), notes, columns)
    rows.findings = pooled_claims
    kept = [r for r in rows.data["rows"] if r.get("dataset") == src.info.name and r.get("ipc") == st["pairs"]]
    if len(kept) != len(rows.data["rows"]):  # rows of an earlier protocol (another source or budget) are not resumed
        log.info("dropping %d row(s) of another protocol from %s", len(rows.data["rows"]) - len(kept), rows.path)
        rows.data["rows"] = kept
    runs = WORK / f"{name}-{tag}"

    def run_seed_for(row: str):
        def run_seed(s: int) -> dict:
            t0 = time.perf_counter()
            scfg1 = dataclasses.replace(tcfg, seeds=1)
            if row == "teacher":
                reps = probe_encoder(teacher.encoder, targets, src.info, scfg1, args.device, seed=s, prepared=prepared)
                return {"linear": {t: r["linear"]["mean"] for t, r in reps.items()}, "m": 0, "pretrain_pairs": 0,
                        "stored_floats": 0, "seconds": time.perf_counter() - t0}
            rec = {"m": 0, "pretrain_pairs": 0, "stored_floats": 0}
            x = y = None
            if ROWS[row] is not None:
                method, margs = method_args(st, row, budget)
                cfg = RunConfig(method=method, device=args.device, seed=s)
                cfg.method_args = margs
                out = runs / row / f"seed{s}"
                distill_ssl(cfg, out, overwrite=True, progress=False, ds=src, ssl_override=scfg)
                x, y, man = load_pretrain_pairs(out)
                syn = man["synthesis"]
                err, zero = syn.get("approx_relative_error") or {}, syn.get("approx_zero_shift_error") or {}
                rec.update(m=syn.get("m"), stored_floats=man["stored_floats"], synthesis_seconds=man["wall_time_seconds"],
                           first_loss=syn.get("first_loss"), last_loss=syn.get("last_loss"), full_rank=syn.get("full_rank", True),
                           approx_error=statistics.fmean(err.values()) if err else None,
                           approx_zero_shift_error=statistics.fmean(zero.values()) if zero else None)
            reps = evaluate_transfer_targets(x, y, src.info, targets, scfg1, args.device, seed=s, prepared=prepared)
            rec.update(pretrain_pairs=0 if x is None else len(x),
                       linear={t: r["linear"]["mean"] for t, r in reps.items() if "linear" in r},
                       finetune={t: r["finetune"]["mean"] for t, r in reps.items() if "finetune" in r},
                       seconds=time.perf_counter() - t0)
            log.info("%s seed %d: linear %s (%.0f s)", row, s, {t: round(v, 2) for t, v in rec["linear"].items()}, rec["seconds"])
            return rec

        return run_seed

    for row in [r for r in ROWS if not args.only or r in args.only]:
        if rows.has(method=row, seeds=seeds):
            continue
        recs = paired_seeds(runs / row, seeds, run_seed_for(row), deadline)
        if recs is None:
            break
        rows.add(aggregate(row, recs, st, budget_floats, targets, src.info.name))
    rows.write_markdown()
    print((rows.path.with_suffix(".md")).read_text())


if __name__ == "__main__":
    main()
