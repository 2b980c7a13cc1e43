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


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", help="byte budget: 120KiB, 1.5MB, 250000 or ipc10@32; picks ipc and bits (see `tinyset budget`)")
    p.add_argument("--budget-bits", default="32,8,4,3,2", help="candidate bit widths for --budget (default 32,8,4,3,2)")


def apply_budget(args, cfg):
    """For ``distill --budget``: set ``cfg.ipc`` and the in-loop quantizer's bits from the plan,
    print the plan and why. Returns the plan (or None without --budget)."""
    if not getattr(args, "budget", None):
        return None
    from ..jobs.budget import parse_budget, plan_budget
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
    budget = parse_budget(args.budget, info.shape, info.num_classes, name, gran)
    smallest = min(len(ds.train.class_indices(c)) for c in range(info.num_classes))
    plan = plan_budget(budget, info.shape, info.num_classes, _candidates(args.budget_bits), name, gran, max_ipc=smallest)
    print(f"budget {args.budget} = {budget} bytes; candidates ({name}, {gran}):")
    print(plan.table())
    print(f"chosen: {plan.chosen.ipc} per class at {plan.chosen.bits} bits, because {plan.reason}")
    cfg.ipc = plan.chosen.ipc
    args_q = {**q, "granularity": gran}
    cfg.method_args = dict(cfg.method_args)
    cfg.method_args["quantizer"] = {**args_q, "name": None} if plan.chosen.bits == 32 else {**args_q, "name": name, "bits": plan.chosen.bits}
    return plan


def check_budget(plan, out: Path) -> None:
    if plan is None:
        return
    from ..artifact import load_artifact

    got = load_artifact(out, verify=False).total_bytes
    if got > plan.budget:
        raise TinysetError(f"{out} holds {got} bytes, over the budget of {plan.budget}; this is a bug, please report it")
    print(f"stored {got} bytes of the {plan.budget}-byte budget")


def cmd_compress(args) -> int:
    from ..artifact import load_artifact
    from ..jobs.budget import parse_budget, plan_budget
    from ..jobs.compress import CompressConfig, compress_artifact, num_classes_of

    cfg = CompressConfig(quantizer=args.quantizer, bits=args.bits, granularity=args.granularity,
                         calibrate_steps=args.calibrate_steps, space=args.space)
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
    out = Path(args.out)
    compress_artifact(args.run, out, cfg, overwrite=args.overwrite)
    art = load_artifact(out)
    src = art.manifest["compressed_from"]["total_bytes"]
    print(f"compressed {args.run} ({src} B) -> {out} ({art.total_bytes} B, {src / art.total_bytes:.1f}x smaller) "
          f"with {cfg.quantizer} at {cfg.bits} bits; mean squared error {art.manifest['compression']['mse']:.3g}")
    return 0


def cmd_budget(args) -> int:
    from ..jobs.budget import parse_budget, plan_budget
    from ..data import load_dataset
    from ..config import DataConfig

    ds = load_dataset(args.dataset, DataConfig(dataset=args.dataset, data_root=args.data_root))
    info = ds.info
    budget = parse_budget(args.budget, info.shape, info.num_classes, args.quantizer, args.granularity)
    smallest = min(len(ds.train.class_indices(c)) for c in range(info.num_classes))
    plan = plan_budget(budget, info.shape, info.num_classes, _candidates(args.budget_bits), args.quantizer,
                       args.granularity, max_ipc=smallest)
    if args.json:
        print(json.dumps({"budget": budget, "options": [o.__dict__ for o in plan.options], "chosen": plan.chosen.__dict__,
                          "reason": plan.reason}))
        return 0
    print(f"budget {args.budget} = {budget} bytes for {info.name} ({info.num_classes} classes, shape {list(info.shape)})")
    print(plan.table())
    print(f"chosen: {plan.chosen.ipc} per class at {plan.chosen.bits} bits, because {plan.reason}")
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
    c.add_argument("--budget", help="pick the widest --budget-bits candidate that fits this many bytes")
    c.add_argument("--budget-bits", default="8,6,5,4,3,2,1")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--quiet", action="store_true", help="no info logs")
    c.set_defaults(func=cmd_compress)

    b = sub.add_parser("budget", help="show which images-per-class x bits fit a byte budget, and the pick")
    b.add_argument("--dataset", default="digits")
    b.add_argument("--data-root")
    b.add_argument("--budget", required=True)
    b.add_argument("--budget-bits", default="32,8,4,3,2")
    b.add_argument("--quantizer", default="uniform")
    b.add_argument("--granularity", default="tensor")
    b.add_argument("--json", action="store_true")
    b.add_argument("--quiet", action="store_true", help="no info logs")
    b.set_defaults(func=cmd_budget)
