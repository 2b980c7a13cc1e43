"""The ``tinyset`` command. Only this module prints; the library logs."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .cli_quant import add_budget_args, apply_budget, check_budget, register_quant_commands
from .config import RunConfig, apply_mapping, build_config, list_presets, load_yaml, parse_override
from .errors import TinysetError

log = logging.getLogger("tinyset")


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"YAML preset file or bundled preset name ({', '.join(list_presets()) or 'none'})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. eval.epochs=300 (repeatable)")
    p.add_argument("--data-root", help="folder with named .npz files or torchvision data (default $TINYSET_DATA)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR when it is missing")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    p.add_argument("--tensorboard", action="store_true", help="also write log.jsonl's scalars for TensorBoard (needs tinyset[tensorboard])")


def _run_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = build_config(RunConfig, args.config, None, base=base)
    flags = {
        "data.dataset": getattr(args, "dataset", None), "data.data_root": args.data_root,
        "data.download": True if args.download else None, "device": args.device,
        "method": getattr(args, "method", None), "ipc": getattr(args, "ipc", None), "seed": getattr(args, "seed", None),
        "teacher.checkpoint": getattr(args, "teacher", None), "teacher.model": getattr(args, "teacher_model", None),
        "eval.seeds": getattr(args, "seeds", None), "eval.student": getattr(args, "student", None),
        "eval.epochs": getattr(args, "epochs", None), "eval.loss": getattr(args, "kd", None),
    }
    for key, value in flags.items():
        if value is not None:
            apply_mapping(cfg, parse_override(f"{key}={json.dumps(value)}"))
    if getattr(args, "label_modes", None):
        cfg.eval.label_modes = tuple(args.label_modes.split(","))
    if getattr(args, "no_eval", False):
        cfg.evaluate = False
    for o in args.set:
        apply_mapping(cfg, parse_override(o))
    return cfg


def cmd_distill(args) -> int:
    from .pipeline import distill

    cfg = _run_config(args)
    plan = apply_budget(args, cfg)  # --budget: chooses ipc and bits, says why
    out = Path(args.out or f"runs/{Path(cfg.data.dataset).name.replace(':', '_')}-{cfg.method}-ipc{cfg.ipc}")
    res = distill(cfg, out, overwrite=args.overwrite, progress=not args.quiet)
    check_budget(plan, out)
    syn = res.manifest["synthesis"]
    print(f"distilled {cfg.data.dataset} with {cfg.method} at IPC {cfg.ipc}: {out}")
    extra = f", {syn['iterations_run']} iterations run ({syn.get('iterations_saved', 0)} saved by early stop)" if "iterations_run" in syn else ""
    print(f"synthesis: {syn['seconds']:.1f}s, teacher images forward {syn['teacher_forward_images']} / backward {syn['teacher_backward_images']}{extra}")
    print(f"preview: {out / 'preview.png'}")
    if res.report:
        print()
        print((out / "eval.md").read_text())
    return 0


def cmd_teacher(args) -> int:
    from .data import load_dataset
    from .teacher import get_teacher, teacher_accuracy
    from .utils.runlog import resolve_device

    cfg = _run_config(args)
    if args.model:
        cfg.teacher.model = args.model
    if args.epochs is not None:
        cfg.teacher.epochs = args.epochs
    ds = load_dataset(cfg.data.dataset, cfg.data)
    dev = resolve_device(cfg.device)
    t = get_teacher(ds, cfg.teacher, dev, progress=not args.quiet)
    acc = t.reference.get("test_accuracy")
    if acc is None:
        acc = teacher_accuracy(t, ds, dev)
    print(f"teacher {t.reference.get('model')} on {ds.info.name}: test accuracy {acc:.2f}%")
    print(f"checkpoint: {t.reference['path']}")
    return 0


def cmd_eval(args) -> int:
    from .pipeline import evaluate_run

    run = Path(args.run)
    base = RunConfig()
    if (run / "config.yaml").exists():
        apply_mapping(base, load_yaml(run / "config.yaml"))
    elif not run.exists():
        raise TinysetError(f"run {run} not found")
    if args.he_da is not None:
        base.eval.he_da = args.he_da
    cfg = _run_config(args, base)
    evaluate_run(run, cfg, progress=not args.quiet)
    print((run / "eval.md").read_text())
    return 0


def cmd_export(args) -> int:
    from .artifact.interop import EXPORTERS

    out = EXPORTERS.get(args.to)(args.run, args.out, overwrite=args.overwrite)
    print(f"exported {args.run} -> {out} ({args.to})")
    return 0


def cmd_import(args) -> int:
    from .artifact.interop import import_set

    out = import_set(args.source, args.out, dataset=args.dataset, data_root=args.data_root, ipc=args.ipc,
                     overwrite=args.overwrite)
    print(f"imported {args.source} -> {out}; score it with: tinyset eval {out}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    out = write_report(args.runs, args.out, title=args.title)
    print(f"report: {out} (figures as PNG in {out.parent / (out.stem + '_figures')})")
    return 0


def cmd_info(args) -> int:
    from .artifact import load_artifact

    art = load_artifact(args.run)
    m = art.manifest
    print(f"artifact {art.path} (format {m['format_version']}, tinyset {m.get('tinyset_version')})")
    print(f"dataset {m['dataset']}, method {m['method']}, ipc {m['ipc']}, seed {m['seed']}, images {tuple(art.images.shape)}")
    print(f"decoder {art.decoder['name']}; stored bytes {m['total_bytes']}: " + ", ".join(f"{k} {v['bytes']} B ({v['bits']} bits, {v['dtype']})" for k, v in m["components"].items()))
    teacher = m.get("teacher") or {}
    if teacher:
        print(f"teacher {teacher.get('model')} sha256 {str(teacher.get('sha256'))[:16]}… test accuracy {teacher.get('test_accuracy')}")
    print(f"synthesis {m['synthesis']['seconds']:.1f}s; wall {m['wall_time_seconds']:.1f}s")
    if args.json:
        print(json.dumps(m, indent=2, default=str))
    return 0


def _listing(rows) -> int:
    width = max(len(n) for n, _ in rows)
    for name, doc in rows:
        print(f"{name.ljust(width)}  {doc}")
    return 0


def cmd_datasets(args) -> int:
    from .data import describe_datasets

    return _listing(describe_datasets())


def cmd_models(args) -> int:
    from .models import list_models

    return _listing(list_models())


def cmd_methods(args) -> int:
    from .methods import METHODS

    return _listing([(n, METHODS.describe(n)) for n in METHODS.names()])


def cmd_kd_losses(args) -> int:
    from .kd import KD_LOSSES

    return _listing([(n, KD_LOSSES.describe(n)) for n in KD_LOSSES.names()])


def cmd_kd(args) -> int:
    from .kd_run import run_kd

    cfg = _run_config(args)
    res = run_kd(cfg, student=args.student_model, loss=args.loss, out=Path(args.out), epochs=args.epochs,
                 he_da=args.he_da, progress=not args.quiet)
    print(f"{args.loss}: student {args.student_model} test accuracy {res['test_accuracy']:.2f}% -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyset", description="Distil image datasets into tiny synthetic ones.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("distill", help="distil a dataset, write the artifact, evaluate it")
    d.add_argument("--dataset", help="digits | cifar10 | mnist | npz:<path> | imagefolder:<root> ...")
    d.add_argument("--method", help="random | rded | sre2l | e2d | herding")
    d.add_argument("--ipc", type=int, help="images per class")
    d.add_argument("--seed", type=int)
    d.add_argument("--out", help="run directory (default runs/<dataset>-<method>-ipc<N>)")
    d.add_argument("--teacher", help="your own teacher checkpoint (.pt) instead of a cached/trained one")
    d.add_argument("--teacher-model", help="teacher architecture to train (default convnet3)")
    d.add_argument("--seeds", type=int, help="evaluation seeds (default 3)")
    d.add_argument("--student", help="student architecture for evaluation")
    d.add_argument("--label-modes", help="comma list of soft,hard")
    d.add_argument("--no-eval", action="store_true", help="write the artifact only")
    d.add_argument("--overwrite", action="store_true")
    add_budget_args(d)
    _common_run_args(d)
    d.set_defaults(func=cmd_distill)

    t = sub.add_parser("teacher", help="train (or load from cache) a teacher and report its test accuracy")
    t.add_argument("--dataset")
    t.add_argument("--model", help="teacher architecture (see `tinyset models`)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--teacher", help="evaluate your own checkpoint instead")
    _common_run_args(t)
    t.set_defaults(func=cmd_teacher)

    e = sub.add_parser("eval", help="train fresh students on a run's distilled set (and a random subset)")
    e.add_argument("run")
    e.add_argument("--seeds", type=int)
    e.add_argument("--student")
    e.add_argument("--epochs", type=int)
    e.add_argument("--kd", help="soft-label loss (see `tinyset kd-losses`)")
    e.add_argument("--he-da", type=float, nargs="?", const=0.5, default=None, help="HE-DA: re-mix this top-energy fraction (default 0.5)")
    e.add_argument("--label-modes", help="comma list of soft,hard")
    e.add_argument("--teacher")
    _common_run_args(e)
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="export a distilled set: imagefolder (PNGs), ddranking (tensors + soft labels), hf (datasets)")
    x.add_argument("run")
    x.add_argument("--to", default="imagefolder", help="imagefolder | ddranking | hf")
    x.add_argument("out")
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="describe an artifact (checks its checksums)")
    i.add_argument("run")
    i.add_argument("--json", action="store_true", help="also print the whole manifest")
    i.set_defaults(func=cmd_info)

    im = sub.add_parser("import", help="turn another tool's distilled images (ImageFolder or tensor file) into a tinyset run")
    im.add_argument("source", help="ImageFolder root (class folders of images), DD-Ranking folder, or .pt/.safetensors file")
    im.add_argument("out", help="run directory to create (then: tinyset eval OUT)")
    im.add_argument("--dataset", required=True, help="the dataset the images were distilled from (its classes and test split)")
    im.add_argument("--data-root", help="folder with named .npz files (default $TINYSET_DATA)")
    im.add_argument("--ipc", type=int, help="images per class to record (default: the largest class count)")
    im.add_argument("--overwrite", action="store_true")
    im.set_defaults(func=cmd_import)

    r = sub.add_parser("report", help="one self-contained HTML page (and PNG figures) for one or more runs")
    r.add_argument("runs", nargs="+", help="run directories (artifact + eval.json + log.jsonl)")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default="tinyset report")
    r.set_defaults(func=cmd_report)

    k = sub.add_parser("kd", help="knowledge distillation on a full dataset (teacher -> student)")
    k.add_argument("--dataset")
    k.add_argument("--teacher", help="teacher checkpoint (default: cached/trained teacher.model)")
    k.add_argument("--teacher-model")
    k.add_argument("--student", dest="student_model", default="convnet:depth=3,width=32")
    k.add_argument("--loss", default="kd", help="see `tinyset kd-losses`")
    k.add_argument("--epochs", type=int, default=30)
    k.add_argument("--he-da", type=float, nargs="?", const=0.5, default=None)
    k.add_argument("--out", default="runs/kd")
    _common_run_args(k)
    k.set_defaults(func=cmd_kd)

    register_quant_commands(sub)  # compress, budget

    for name, fn, helptext in (
        ("datasets", cmd_datasets, "list datasets"), ("models", cmd_models, "list models"),
        ("methods", cmd_methods, "list distillation methods"), ("kd-losses", cmd_kd_losses, "list KD losses"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.set_defaults(func=fn)
    return p


def _setup_distributed(args) -> None:
    """Under torchrun: join the process group; only rank 0 prints, logs info and shows progress."""
    from . import distributed as dist

    info = dist.init_distributed(getattr(args, "device", None) or "auto")
    if info.rank != 0:
        args.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "tensorboard", False):
        os.environ["TINYSET_TENSORBOARD"] = "1"
    try:
        _setup_distributed(args)
    except TinysetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except TinysetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished units are kept and the next run resumes from them", file=sys.stderr)
        return 130
    finally:
        from . import distributed as dist

        dist.cleanup()


if __name__ == "__main__":
    sys.exit(main())
