"""CLI for bytes: ``tinyset compress``, ``tinyset budget`` and ``tinyset distill --budget``.

Kept beside ``cli/main.py`` so that module only registers these commands (it calls
``register_quant_commands`` and ``apply_budget``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import TinysetError


def _candidates(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise TinysetError(f"--budget-bits must be a comma list of bit widths, got {text!r}") from None


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("true", "yes", "1", "on"):
        return True
    if t in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", help="byte budget: 120KiB, 1.5MB, 250000 or ipc10@32; picks ipc and bits (see `tinyset budget`)")
    p.add_argument("--budget-bits", default="32,8,4,3,2", help="candidate bit widths for --budget (default 32,8,4,3,2)")
    p.add_argument("--budget-rule", default="search", choices=["search", "fixed"],
                   help="search: score the candidate points with a short proxy student on a held-out split of the "
                        "training set and take the best (default); fixed: 3 bits if it fits (no training)")
    p.add_argument("--budget-points", help="candidate points IPC@BITS (max@BITS = the most that fit), e.g. 10@32,40@8,max@3")
    p.add_argument("--proxy-steps", type=int, default=300, help="budget search: optimiser steps per proxy student")


def _proxy(args):
    from ..jobs.budget import ProxyConfig

    kw = {"steps": args.proxy_steps}
    for name in ("holdout", "seeds", "student"):
        v = getattr(args, f"proxy_{name}", None)
        if v is not None:
            kw[name] = v
    return ProxyConfig(**kw)


def _print_search(res, label: str) -> None:
    print(f"{label}; candidates ({res.quantizer}, {res.granularity}, {res.label_mode} labels), each scored by a "
          f"proxy student ({res.proxy['student']}, {res.proxy['steps']} steps, {res.proxy['label_mode']} labels) on "
          f"{res.proxy['holdout_samples']} held-out training samples (the test split is never read):")
    print(res.table())
    print()
    print(res.curve())
    print(f"chosen: {res.chosen.ipc} per class at {res.chosen.bits} bits, because {res.reason}")


def apply_budget(args, cfg):
    """For ``distill --budget``: set ``cfg.ipc`` and the in-loop quantizer's bits from the plan
    (searched, or the fixed rule), print it and why. Returns the plan (or None without --budget)."""
    if not getattr(args, "budget", None):
        return None
    from ..jobs.budget import parse_budget, parse_points, plan_budget, search_budget
    from ..data import load_dataset
    from ..methods import METHODS

    ds = load_dataset(cfg.data.dataset, cfg.data)
    info = ds.info
    if "quantizer" not in getattr(METHODS.get(cfg.method).Config, "__dataclass_fields__", {}):
        raise TinysetError(f"method {cfg.method!r} has no quantizer in the loop; distil it at a fixed --ipc and use "
                           f"`tinyset compress RUN --budget {args.budget}`")
    q = dict(cfg.method_args.get("quantizer") or {})
    name = q.get("name") or "uniform"
    gran = q.get("granularity") or ("image" if cfg.method in ("e2d", "sre2l") else "tensor")
    qextra = {k: q[k] for k in ("signed", "space", "grid", "ste", "ties") if q.get(k) is not None}
    budget = parse_budget(args.budget, info.shape, info.num_classes, name, gran, info)
    if getattr(args, "budget_rule", "search") == "search":
        pts = parse_points(args.budget_points) if getattr(args, "budget_points", None) else None
        plan = search_budget(ds, budget, _candidates(args.budget_bits), pts, name, gran, _proxy(args), qextra=qextra)
        _print_search(plan, f"budget {args.budget} = {budget} bytes")
        ipc, bits = plan.chosen.ipc, plan.chosen.bits
    else:
        smallest = min(len(ds.train.class_indices(c)) for c in range(info.num_classes))
        plan = plan_budget(budget, info.shape, info.num_classes, _candidates(args.budget_bits), name, gran,
                           max_ipc=smallest, info=info, qextra=qextra)
        print(f"budget {args.budget} = {budget} bytes; candidates ({name}, {gran}), fixed rule:")
        print(plan.table())
        print(f"chosen: {plan.chosen.ipc} per class at {plan.chosen.bits} bits, because {plan.reason}")
        ipc, bits = plan.chosen.ipc, plan.chosen.bits
    cfg.ipc = ipc
    args_q = {**q, "granularity": gran}
    cfg.method_args = dict(cfg.method_args)
    cfg.method_args["quantizer"] = {**args_q, "name": None} if bits == 32 else {**args_q, "name": name, "bits": bits}
    return plan


def check_budget(plan, out: Path) -> None:
    """After ``distill --budget``: the set's bytes are within the budget, and the plan (the chosen
    point and, for a search, the curve) is saved in the run as ``budget.json``."""
    if plan is None:
        return
    from ..artifact import load_artifact
    from ..utils.files import atomic_write_text

    got = load_artifact(out, verify=False).set_bytes
    if got > plan.budget:
        raise TinysetError(f"{out} holds {got} bytes, over the budget of {plan.budget}; this is a bug, please report it")
    atomic_write_text(out / "budget.json", json.dumps({**plan.to_dict(), "set_bytes": got}, indent=2, default=str))
    print(f"stored {got} bytes (set_bytes) of the {plan.budget}-byte budget; the plan is in {out / 'budget.json'}")


def _run_teacher(run: str, checkpoint: str | None, train: bool = False):
    """The teacher for ``compress --labels stored|teacher``: ``--teacher CHECKPOINT``, else the one the
    run's config.yaml names (refused if it would have to be trained, unless ``train``)."""
    from ..config import RunConfig, apply_mapping, load_yaml
    from ..data import load_dataset
    from ..teachers.supervised import get_teacher, teacher_source

    cfg = RunConfig()
    if (Path(run) / "config.yaml").is_file():
        apply_mapping(cfg, load_yaml(Path(run) / "config.yaml"))
    if checkpoint:
        cfg.teacher.checkpoint = checkpoint
    ds = load_dataset(cfg.data.dataset, cfg.data)
    kind, line = teacher_source(ds, cfg.teacher)
    if kind in ("train", "resume") and not train:
        raise TinysetError(f"the teacher is {line}; give --teacher CHECKPOINT (or --train-teacher to train it)")
    return get_teacher(ds, cfg.teacher, "cpu", progress=False).model


def cmd_compress(args) -> int:
    from ..artifact import load_artifact
    from ..jobs.budget import parse_budget, plan_budget
    from ..jobs.compress import CompressConfig, compress_artifact, num_classes_of

    cfg = CompressConfig(quantizer=args.quantizer, bits=args.bits, granularity=args.granularity,
                         calibrate_steps=args.calibrate_steps, space=args.space, signed=args.signed, grid=args.grid,
                         ste=args.ste, ties=args.ties, labels=args.labels, soft_k=args.soft_k, soft_bits=args.soft_bits)
    if args.budget:
        art = load_artifact(args.run)
        x = art.images
        k = num_classes_of(art)
        budget = parse_budget(args.budget, tuple(x.shape[1:]), k, cfg.quantizer, cfg.granularity)
        ipc = len(x) // k
        from ..quant import QUANTIZERS

        top = QUANTIZERS.get(cfg.quantizer).max_bits
        cands = [b for b in _candidates(args.budget_bits) if b != 32 and b <= top]
        plan = plan_budget(budget, tuple(x.shape[1:]), k, cands, cfg.quantizer, cfg.granularity, max_ipc=ipc)
        fits = [o for o in plan.options if o.ipc >= ipc]
        if not fits:
            raise TinysetError(f"{args.run} ({ipc} per class) does not fit {budget} bytes at any of {cands} bits")
        cfg.bits = max(o.bits for o in fits)
        print(f"budget {budget} bytes: {cfg.bits} bits is the widest candidate that holds all {ipc} per class")
    teacher = None
    if cfg.labels in ("stored", "teacher") and (args.teacher or cfg.labels == "stored"):
        teacher = _run_teacher(args.run, args.teacher, args.train_teacher)
    out = Path(args.out)
    compress_artifact(args.run, out, cfg, overwrite=args.overwrite, teacher=teacher)
    art = load_artifact(out)
    src = art.manifest["compressed_from"]
    q = art.manifest["compression"]["quantizer_config"]
    conv = ", ".join(f"{k} {q[k]}" for k in ("grid", "ste", "ties") if k in q)
    print(f"compressed {args.run} -> {out} with {cfg.quantizer} at {cfg.bits} bits ({conv}); "
          f"mean squared error {art.manifest['compression']['mse']:.3g}")
    print(f"set_bytes {src['set_bytes']} -> {art.set_bytes} ({src['set_bytes'] / art.set_bytes:.1f}x smaller); "
          f"student_bytes ({src['label_mode']} -> {art.label_mode} labels) {src['student_bytes']} -> "
          f"{art.student_bytes()} ({src['student_bytes'] / art.student_bytes():.1f}x smaller)")
    return 0


def cmd_budget(args) -> int:
    from ..artifact import teacher_bytes
    from ..config import DataConfig
    from ..data import load_dataset
    from ..jobs.budget import LabelCost, parse_budget, parse_points, plan_budget, search_budget
    from ..utils.files import atomic_write_text

    ds = load_dataset(args.dataset, DataConfig(dataset=args.dataset, data_root=args.data_root))
    info = ds.info
    teacher = None
    tb = 0
    if args.labels == "teacher" or args.teacher:
        from ..models import get_model, load_model

        model = load_model(args.teacher, info)[0] if args.teacher else get_model(args.teacher_model, info)
        tb = teacher_bytes(model)["bytes"]
        teacher = model.eval() if args.teacher else None  # an untrained architecture only counts bytes
    labels = LabelCost(args.labels, args.soft_k, args.soft_bits, tb)
    budget = parse_budget(args.budget, info.shape, info.num_classes, args.quantizer, args.granularity, info)
    if args.rule == "fixed":
        smallest = min(len(ds.train.class_indices(c)) for c in range(info.num_classes))
        plan = plan_budget(budget, info.shape, info.num_classes, _candidates(args.budget_bits), args.quantizer,
                           args.granularity, max_ipc=smallest, info=info, labels=labels)
        result = plan.to_dict()
        if not args.json:
            print(f"budget {args.budget} = {budget} bytes for {info.name} ({info.num_classes} classes, shape "
                  f"{list(info.shape)}), {args.labels} labels, fixed rule (no search):")
            print(plan.table())
            print(f"chosen: {plan.chosen.ipc} per class at {plan.chosen.bits} bits, because {plan.reason}")
    else:
        pts = parse_points(args.points) if args.points else None
        res = search_budget(ds, budget, _candidates(args.budget_bits), pts, args.quantizer, args.granularity,
                            _proxy(args), labels, teacher)
        result = res.to_dict()
        if not args.json:
            _print_search(res, f"budget {args.budget} = {budget} bytes for {info.name} ({info.num_classes} classes, "
                               f"shape {list(info.shape)})")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2, default=str))
        if not args.json:
            print(f"saved the {'plan' if args.rule == 'fixed' else 'curve and the chosen point'} to {args.out}")
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def register_quant_commands(sub) -> None:
    c = sub.add_parser("compress", help="quantize a finished artifact post hoc (codes + state, format 2)")
    c.add_argument("run")
    c.add_argument("--out", required=True)
    c.add_argument("--quantizer", default="apot", help="uniform | apot | codebook")
    c.add_argument("--bits", type=int, default=3)
    c.add_argument("--granularity", default="tensor", help="tensor | channel | image")
    c.add_argument("--space", default="auto", help="pixels | normalized | auto")
    c.add_argument("--calibrate-steps", type=int, default=100, help="Adam steps fitting the clip/levels to the set (MSE)")
    c.add_argument("--signed", type=_bool, default=None, help="true | false (default: the quantizer's: apot signed, uniform unsigned)")
    c.add_argument("--grid", choices=["midtread", "midrise"], help="signed uniform grid (default midtread: 2^b - 1 levels with 0)")
    c.add_argument("--ste", choices=["clipped", "calibrated"], help="gradient to the data outside the clip (default clipped)")
    c.add_argument("--ties", choices=["away", "even", "down"], help="exact halves: away (default, on |x|), even (uniform), down (apot)")
    c.add_argument("--labels", default="hard", choices=["hard", "stored", "teacher"],
                   help="what a student learns from besides the set, counted in student_bytes: hard labels, soft labels "
                        "stored beside the set (needs the teacher once), or the online teacher")
    c.add_argument("--soft-k", type=int, default=None, help="stored soft labels: top-k classes per sample (default all)")
    c.add_argument("--soft-bits", type=int, default=8, help="stored soft labels: bits per stored logit, 1-8 or 32")
    c.add_argument("--teacher", help="teacher checkpoint for --labels stored/teacher (default: the run's teacher)")
    c.add_argument("--train-teacher", action="store_true", help="train the run's teacher if it is not cached")
    c.add_argument("--budget", help="pick the widest --budget-bits candidate that fits this many bytes")
    c.add_argument("--budget-bits", default="8,6,5,4,3,2,1")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--quiet", action="store_true", help="no info logs")
    c.set_defaults(func=cmd_compress)

    b = sub.add_parser("budget", help="search the images-per-class x bits points that fit a byte budget with a proxy "
                                      "student on a held-out training split, print the curve and the pick")
    b.add_argument("--dataset", default="digits")
    b.add_argument("--data-root")
    b.add_argument("--budget", required=True, help="120KiB, 1.5MB, 250000 (bytes) or ipc10@32 (that set's set_bytes)")
    b.add_argument("--budget-bits", default="32,8,4,3,2", help="candidate bit widths (the most that fit at each)")
    b.add_argument("--points", help="candidate points instead: IPC@BITS list, max@BITS = the most that fit (10@32,40@8,max@3)")
    b.add_argument("--rule", default="search", choices=["search", "fixed"],
                   help="search (default): score every point with a proxy student; fixed: 3 bits if it fits, no training")
    b.add_argument("--quantizer", default="uniform")
    b.add_argument("--granularity", default="tensor")
    b.add_argument("--labels", default="hard", choices=["hard", "stored", "teacher"],
                   help="label mode whose bytes count in student_bytes (the budget holds set + labels)")
    b.add_argument("--soft-k", type=int, default=None, help="stored labels: top-k per sample (default all)")
    b.add_argument("--soft-bits", type=int, default=8, help="stored labels: bits per logit (1-8 or 32)")
    b.add_argument("--teacher", help="teacher checkpoint: counted for --labels teacher, and the proxy students learn "
                                     "from it (stored/teacher); without it they learn from hard labels")
    b.add_argument("--teacher-model", default="convnet3", help="--labels teacher without --teacher: count this architecture")
    b.add_argument("--proxy-steps", type=int, default=300, help="optimiser steps per proxy student")
    b.add_argument("--proxy-holdout", type=float, default=None, help="fraction of each class held out to score points (0.2)")
    b.add_argument("--proxy-seeds", type=int, default=None, help="proxy sets + students per point (1)")
    b.add_argument("--proxy-student", default=None, help="proxy student (default convnet:depth=3,width=32 / mlp)")
    b.add_argument("--out", help="save the result (curve, chosen point, proxy split) as JSON here")
    b.add_argument("--json", action="store_true")
    b.add_argument("--quiet", action="store_true", help="no info logs")
    b.set_defaults(func=cmd_budget)
