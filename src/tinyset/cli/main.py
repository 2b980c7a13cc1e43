"""The ``tinyset`` command: the parser and the run commands. Only ``cli/`` prints; the library logs."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .._version import __version__
from .quant import add_budget_args, apply_budget, check_budget, register_quant_commands
from ..config import ConfigError, RunConfig, apply_mapping, build_config, list_presets, load_yaml, parse_override, to_dict
from ..errors import TinysetError

log = logging.getLogger("tinyset")


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"YAML preset file or bundled preset name ({', '.join(list_presets()) or 'none'})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. eval.epochs=300 (repeatable)")
    p.add_argument("--data-root", help="folder with named .npz files or torchvision data (default $TINYSET_DATA)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR when it is missing")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a pickled teacher checkpoint (it can run code): only for files you trust")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (and the plan) and exit")

    p.add_argument("--tensorboard", action="store_true", help="also write log.jsonl's scalars for TensorBoard (needs tinyset[tensorboard])")

class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows a default only where there is one (None means: taken from the config / preset)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _sub(sub, name: str, helptext: str, examples: str):
    return sub.add_parser(name, help=helptext, description=helptext, epilog="example:\n  " + examples,
                          formatter_class=_Help)


def _run_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = build_config(RunConfig, args.config, None, base=base)
    flags = {
        "data.dataset": getattr(args, "dataset", None), "data.data_root": args.data_root,
        "data.download": True if args.download else None, "device": args.device,
        "method": getattr(args, "method", None), "ipc": getattr(args, "ipc", None), "seed": getattr(args, "seed", None),
        "teacher.checkpoint": getattr(args, "teacher", None), "teacher.model": getattr(args, "teacher_model", None),
        "teacher.pretrained": getattr(args, "pretrained", None),
        "eval.seeds": getattr(args, "seeds", None), "eval.student": getattr(args, "student", None),
        "eval.epochs": getattr(args, "epochs", None), "eval.loss": getattr(args, "kd", None),
    }
    if getattr(args, "protocol", None):  # the named protocol first, so the flags above and --set win over it
        apply_mapping(cfg, {"eval": {"protocol": args.protocol}})
    for key, value in flags.items():
        if value is not None:
            apply_mapping(cfg, parse_override(f"{key}={json.dumps(value)}"))
    if getattr(args, "label_modes", None):
        cfg.eval.label_modes = tuple(args.label_modes.split(","))
    if getattr(args, "no_eval", False):
        cfg.evaluate = False
    if getattr(args, "trust_checkpoint", False):
        cfg.teacher.trust_checkpoint = True
    problems: list[str] = []
    for o in args.set:  # every bad override is reported, not just the first
        try:
            apply_mapping(cfg, parse_override(o))
        except ConfigError as e:
            problems += e.problems
        except TinysetError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(problems)
    return cfg


def _print_config(cfg: RunConfig, plan: dict | None = None) -> int:
    import yaml

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
    for k, v in (plan or {}).items():
        print(f"# {k}: {v}")
    return 0


def cmd_distill(args) -> int:
    from ..jobs.distill import distill

    cfg = _run_config(args)
    plan = apply_budget(args, cfg)  # --budget: chooses ipc and bits, says why
    out = Path(args.out or f"runs/{Path(cfg.data.dataset).name.replace(':', '_')}-{cfg.method}-ipc{cfg.ipc}")
    if args.print_config or args.dry_run:
        from ..jobs.plan import plan_distill

        return _print_config(cfg, plan_distill(cfg, out, measure=args.dry_run))
    t0 = time.perf_counter()
    res = distill(cfg, out, overwrite=args.overwrite, progress=not args.quiet)
    check_budget(plan, out)
    syn = res.manifest["synthesis"]
    print(f"distilled {cfg.data.dataset} with {cfg.method} at IPC {cfg.ipc}: {out}")
    extra = f", {syn['iterations_run']} iterations run ({syn.get('iterations_saved', 0)} saved by early stop)" if "iterations_run" in syn else ""
    print(f"synthesis: {syn['seconds']:.1f}s, teacher images forward {syn['teacher_forward_images']} / backward {syn['teacher_backward_images']}{extra}")
    print(f"preview: {out / 'preview.png'}")
    if res.report:
        from ..eval.protocol import markdown_table

        print()
        print(markdown_table(res.report, res.report.get("title", "")))
    print(f"wall time: {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_teacher(args) -> int:
    from ..data import load_dataset
    from ..teachers.supervised import get_teacher, teacher_accuracy
    from ..utils.runlog import resolve_device

    from ..jobs.validate import check_against_dataset, check_config

    cfg = _run_config(args)
    if args.model:
        cfg.teacher.model = args.model
    if args.epochs is not None:
        cfg.teacher.epochs = args.epochs
    if args.print_config:
        return _print_config(cfg)
    check_config(cfg, synthesis=False, evaluation=False, teacher=True)
    ds = load_dataset(cfg.data.dataset, cfg.data)
    check_against_dataset(cfg, ds, synthesis=False, evaluation=False, teacher=True)
    dev = resolve_device(cfg.device)
    if args.ssl:  # self-supervised encoder (issue 15): no labels, no accuracy; features for KRR-ST/SSDD
        from ..teachers.ssl import SSLConfig, get_ssl_teacher

        st = get_ssl_teacher(ds, SSLConfig.from_teacher_config(cfg.teacher, args.ssl), dev, progress=not args.quiet)
        print(f"{args.ssl} encoder {st.reference.get('model')} on {ds.info.name}: {st.dim}-d features, final loss {st.reference.get('final_loss')}")
        print(f"checkpoint: {st.reference['path']}")
        return 0
    t = get_teacher(ds, cfg.teacher, dev, progress=not args.quiet)
    acc = t.reference.get("test_accuracy")
    if acc is None:
        acc = teacher_accuracy(t, ds, dev)
    print(f"teacher {t.reference.get('model')} on {ds.info.name}: test accuracy {acc:.2f}%")
    print(f"checkpoint: {t.reference['path']}")
    return 0


def cmd_eval(args) -> int:
    from ..jobs.distill import evaluate_run

    run = Path(args.run)
    base = RunConfig()
    if (run / "config.yaml").exists():
        apply_mapping(base, load_yaml(run / "config.yaml"))
    elif not run.exists():
        raise TinysetError(f"run {run} not found")
    if args.he_da is not None:
        base.eval.he_da = args.he_da
    cfg = _run_config(args, base)
    if args.print_config:
        return _print_config(cfg)
    if args.transfer:  # self-supervised runs: pre-train on the pairs, probe/fine-tune on a target (issue 15)
        from ..jobs.distill_ssl import transfer_run

        print(transfer_run(run, args.transfer, cfg, [parse_override(o) for o in args.transfer_set], progress=not args.quiet))
        return 0
    from ..eval.protocol import markdown_table

    report = evaluate_run(run, cfg, progress=not args.quiet, train_teacher=args.train_teacher)
    print(markdown_table(report, report.get("title", "")))
    others = len(json.loads((run / "eval.json").read_text()).get("protocols", {})) - 1
    if others > 0:
        print(f"({others} other protocol(s) kept in {run / 'eval.json'} and {run / 'eval.md'})")
    return 0


def cmd_export(args) -> int:
    from ..artifact.interop import EXPORTERS

    out = EXPORTERS.get(args.to)(args.run, args.out, overwrite=args.overwrite)
    print(f"exported {args.run} -> {out} ({args.to})")
    return 0


def cmd_import(args) -> int:
    from ..artifact.interop import import_set

    out = import_set(args.source, args.out, dataset=args.dataset, data_root=args.data_root, ipc=args.ipc,
                     overwrite=args.overwrite, teacher=args.teacher)
    teacher = load_yaml(out / "config.yaml").get("teacher", {})
    which = teacher.get("checkpoint") or "none recorded: `tinyset eval` will ask for --teacher or --train-teacher"
    print(f"imported {args.source} -> {out} (teacher: {which}); score it with: tinyset eval {out}")
    return 0


def cmd_report(args) -> int:
    from ..report import write_report

    out = write_report(args.runs, args.out, title=args.title)
    print(f"report: {out} (figures as PNG in {out.parent / (out.stem + '_figures')})")
    return 0


def _spread(t) -> str:
    """One stored value as itself; many (a clip per image or channel) as count, min, median, max."""
    x = t.detach().float().flatten()
    if x.numel() == 1:
        return f"{x.item():.4g}"
    return f"{x.numel()} values, min {x.min().item():.4g} median {x.median().item():.4g} max {x.max().item():.4g}"


def cmd_info(args) -> int:
    from ..artifact import load_artifact

    art = load_artifact(args.run)
    m = art.manifest
    print(f"artifact {art.path} (format {m['format_version']}, tinyset {m.get('tinyset_version')})")
    print(f"dataset {m['dataset']}, method {m['method']}, ipc {m['ipc']}, seed {m['seed']}, images {tuple(art.images.shape)}")
    print(f"decoder {art.decoder['name']}; stored bytes {m['total_bytes']}: " + ", ".join(f"{k} {v['bytes']} B ({v['bits']} bits, {v['dtype']})" for k, v in m["components"].items()))
    modes = ", ".join(f"{k} {art.set_bytes + int(v)}" for k, v in (m.get("label_bytes") or {"hard": 0}).items())
    print(f"set_bytes {art.set_bytes} (the set file: components, header, decoder); student_bytes ({art.label_mode} "
          f"labels) {art.student_bytes()}; by label mode: {modes}")
    teacher = m.get("teacher") or {}
    if teacher:
        print(f"teacher {teacher.get('model')} sha256 {str(teacher.get('sha256'))[:16]}… test accuracy {teacher.get('test_accuracy')}")
    # the learned clips say where a quantizer put its levels (e.g. an in-loop clip against a post-hoc one)
    state = [k for k, v in m["components"].items() if v.get("role") == "quantizer" and k in art.tensors]
    if state:
        print("quantizer state: " + ", ".join(f"{k} {_spread(art.tensors[k])}" for k in state))
    print(f"synthesis {m['synthesis']['seconds']:.1f}s; wall {m['wall_time_seconds']:.1f}s")
    print("checksums OK (manifest, tensors, preview)")
    if args.json:
        print(json.dumps(m, indent=2, default=str))
    return 0


def _listing(rows) -> int:
    width = max(len(n) for n, _ in rows)
    for name, doc in rows:
        print(f"{name.ljust(width)}  {doc}")
    return 0


def cmd_datasets(args) -> int:
    from ..data import describe_datasets

    return _listing(describe_datasets())


def cmd_models(args) -> int:
    from ..models import list_models

    return _listing(list_models())


def cmd_methods(args) -> int:
    from ..methods import METHODS
    from ..config import describe_fields

    names = [args.name] if getattr(args, "name", None) else METHODS.names()
    if args.name:
        METHODS.get(args.name)  # unknown -> one line with "did you mean"
    if not (args.verbose or args.name):
        return _listing([(n, METHODS.describe(n)) for n in names])
    for n in names:
        print(f"{n}: {METHODS.describe(n)}")
        rows = describe_fields(METHODS.get(n).Config)
        if not rows:
            print("  (no options)")
        width = max((len(f"{o} = {d}") for o, d, _ in rows), default=0)
        for opt, default, doc in rows:
            print(f"  method_args.{f'{opt} = {default}'.ljust(width)}  {doc}")
    return 0


def cmd_protocols(args) -> int:
    from ..config import EVAL_PROTOCOLS

    for name, (doc, values) in EVAL_PROTOCOLS.items():
        print(f"{name}: {doc}")
        if args.verbose:
            print("  " + ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in values.items()))
    return 0


def cmd_kd_losses(args) -> int:
    from ..kd import KD_LOSSES

    return _listing([(n, KD_LOSSES.describe(n)) for n in KD_LOSSES.names()])


def cmd_kd(args) -> int:
    from ..jobs.kd import run_kd

    cfg = _run_config(args)
    if args.print_config:
        return _print_config(cfg, {"student": args.student_model, "loss": args.loss, "epochs": args.epochs})
    res = run_kd(cfg, student=args.student_model, loss=args.loss, out=Path(args.out) if args.out else None,
                 epochs=args.epochs, he_da=args.he_da, progress=not args.quiet, overwrite=args.overwrite)
    print(f"{args.loss}: student {args.student_model} test accuracy {res['test_accuracy']:.2f}% -> {res['out']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyset", description="Distil image datasets into tiny synthetic ones.",
                                epilog="start with:  tinyset distill --config digits-demo --out runs/demo",
                                formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"tinyset {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = _sub(sub, "distill", "distil a dataset, write the artifact, evaluate it",
             "tinyset distill --config digits-demo --out runs/demo   # the demo: 325 s of CPU time")
    d.add_argument("--dataset", help="digits | cifar10 | mnist | npz:<path> | imagefolder:<root> (config default: digits)")
    d.add_argument("--method", help="random | rded | sre2l | e2d | herding (config default: random); options: tinyset methods -v")
    d.add_argument("--ipc", type=int, help="images per class (config default: 10)")
    d.add_argument("--seed", type=int, help="run seed (config default: 0)")
    d.add_argument("--out", help="run directory (default runs/<dataset>-<method>-ipc<N>)")
    d.add_argument("--teacher", help="your own teacher checkpoint (.pt or .safetensors) instead of a cached/trained one")
    d.add_argument("--pretrained", metavar="WEIGHTS", help="tv:<model> teachers: torchvision weights (DEFAULT or an enum name; downloads once) or a local state_dict file; the head keeps the dataset's classes (classes.tsv)")
    d.add_argument("--teacher-model", help="teacher architecture to train (config default: convnet3)")
    d.add_argument("--seeds", type=int, help="evaluation seeds (config default: 3)")
    d.add_argument("--student", help="student architecture for evaluation (config default: convnet3)")
    d.add_argument("--label-modes", help="comma list of soft,hard,stored (config default: soft)")
    d.add_argument("--no-eval", action="store_true", help="write the artifact only")
    d.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    d.add_argument("--dry-run", action="store_true", help="print the resolved config, the units and a rough time (measured on a few steps), then exit")
    add_budget_args(d)
    _common_run_args(d)
    d.set_defaults(func=cmd_distill)

    t = _sub(sub, "teacher", "train (or load from cache) a teacher and report its test accuracy",
             "tinyset teacher --dataset digits --teacher-model convnet:depth=3,width=32 --epochs 10   # the demo's teacher")
    t.add_argument("--dataset", help="see `tinyset datasets` (config default: digits)")
    t.add_argument("--teacher-model", "--model", dest="model", help="teacher architecture, see `tinyset models` (config default: convnet3)")
    t.add_argument("--epochs", type=int, help="training epochs (config default: 30)")
    t.add_argument("--teacher", help="evaluate your own checkpoint (.pt or .safetensors) instead")
    t.add_argument("--pretrained", metavar="WEIGHTS", help="tv:<model> teachers: torchvision weights (DEFAULT or an enum name; downloads once) or a local state_dict file; the head keeps the dataset's classes (classes.tsv)")
    t.add_argument("--ssl", help="train a self-supervised encoder instead (barlow_twins)")
    _common_run_args(t)
    t.set_defaults(func=cmd_teacher)

    e = _sub(sub, "eval", "train fresh students on a run's distilled set (and a random subset)",
             "tinyset eval runs/demo --seeds 1 --label-modes hard --set eval.epochs=40")
    e.add_argument("run", help="a run directory written by `tinyset distill`")
    e.add_argument("--seeds", type=int, help="students per set and label mode (default: the run's config)")
    e.add_argument("--student", help="student architecture (default: the run's config)")
    e.add_argument("--epochs", type=int, help="student epochs (default: the run's config)")
    e.add_argument("--kd", help="soft-label loss, see `tinyset kd-losses` (default: the run's config)")
    e.add_argument("--he-da", type=float, nargs="?", const=0.5, default=None, help="HE-DA: re-mix this top-energy fraction (0.5 when given without a value)")
    e.add_argument("--label-modes", help="comma list of soft,hard,stored (stored: the set's own quantized soft labels, no teacher)")
    e.add_argument("--teacher", help="teacher checkpoint for soft labels (default: the run's teacher)")
    e.add_argument("--protocol", help="student protocol, see `tinyset protocols` (default: the run's config, else rded)")
    e.add_argument("--train-teacher", action="store_true",
                   help="allow training the teacher when it is not cached (refused otherwise: it can take hours on a CPU)")
    e.add_argument("--transfer", metavar="TARGET", help="self-supervised runs: transfer to this dataset (linear probe + fine-tune)")
    e.add_argument("--transfer-set", action="append", default=[], metavar="KEY=VALUE", help="TransferConfig override, e.g. finetune_epochs=5")
    _common_run_args(e)
    e.set_defaults(func=cmd_eval)

    x = _sub(sub, "export", "export a distilled set: imagefolder (PNGs), ddranking (tensors + soft labels), hf (datasets)",
             "tinyset export runs/demo --to imagefolder runs/demo-png")
    x.add_argument("run", help="a run or artifact directory")
    x.add_argument("--to", default="imagefolder", help="imagefolder | ddranking | hf")
    x.add_argument("out", help="destination folder")
    x.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    x.add_argument("--quiet", action="store_true", help="no info logs")
    x.set_defaults(func=cmd_export)

    i = _sub(sub, "info", "describe an artifact (checks its checksums)", "tinyset info runs/demo")
    i.add_argument("run", help="a run or artifact directory")
    i.add_argument("--json", action="store_true", help="also print the whole manifest")
    i.add_argument("--quiet", action="store_true", help="no info logs")
    i.set_defaults(func=cmd_info)

    im = sub.add_parser("import", help="turn another tool's distilled images (ImageFolder or tensor file) into a tinyset run")
    im.add_argument("source", help="ImageFolder root (class folders of images), DD-Ranking folder, or .pt/.safetensors file")
    im.add_argument("out", help="run directory to create (then: tinyset eval OUT)")
    im.add_argument("--dataset", required=True, help="the dataset the images were distilled from (its classes and test split)")
    im.add_argument("--data-root", help="folder with named .npz files (default $TINYSET_DATA)")
    im.add_argument("--ipc", type=int, help="images per class to record (default: the largest class count)")
    im.add_argument("--overwrite", action="store_true")
    im.add_argument("--teacher", help="the teacher that made the set: a checkpoint (.pt/.safetensors) or a tinyset run "
                                      "directory whose teacher to reuse; recorded for `tinyset eval`")
    im.set_defaults(func=cmd_import)

    r = sub.add_parser("report", help="one self-contained HTML page (and PNG figures) for one or more runs")
    r.add_argument("runs", nargs="+", help="run directories (artifact + eval.json + log.jsonl)")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default="tinyset report")
    r.set_defaults(func=cmd_report)

    k = _sub(sub, "kd", "knowledge distillation on a full dataset (teacher -> student)",
             "tinyset kd --dataset digits --student convnet:depth=3,width=32 --loss dkd --epochs 5   # 5 epochs on 1,437 images")
    k.add_argument("--dataset", help="see `tinyset datasets` (config default: digits)")
    k.add_argument("--teacher", help="teacher checkpoint (default: cached/trained teacher.model)")
    k.add_argument("--teacher-model", help="teacher architecture (config default: convnet3)")
    k.add_argument("--student", dest="student_model", default="convnet:depth=3,width=32", help="student architecture")
    k.add_argument("--loss", default="kd", help="see `tinyset kd-losses`")
    k.add_argument("--epochs", type=int, default=30, help="student epochs")
    k.add_argument("--he-da", type=float, nargs="?", const=0.5, default=None, help="HE-DA fraction (0.5 when given without a value)")
    k.add_argument("--out", help="output folder (default runs/kd-<dataset>-<loss>-<student>-e<epochs>); a folder of a different kd run is refused")
    k.add_argument("--overwrite", action="store_true", help="clear an --out that holds a different kd run")
    _common_run_args(k)
    k.set_defaults(func=cmd_kd)

    register_quant_commands(sub)  # compress, budget

    for name, fn, helptext in (
        ("datasets", cmd_datasets, "list datasets"), ("models", cmd_models, "list models"),
        ("methods", cmd_methods, "list distillation methods (-v: with their options)"), ("kd-losses", cmd_kd_losses, "list KD losses"),
        ("protocols", cmd_protocols, "list student evaluation protocols (-v: with their values)"),
    ):
        s = _sub(sub, name, helptext, f"tinyset {name}" + (" -v" if name in ("methods", "protocols") else ""))
        if name == "methods":
            s.add_argument("name", nargs="?", help="one method: show its options")
        if name in ("methods", "protocols"):
            s.add_argument("-v", "--verbose", action="store_true", help="list each entry's options/values")
        s.add_argument("--quiet", action="store_true", help="no info logs")
        s.set_defaults(func=fn)
    return p


def _setup_distributed(args) -> None:
    """Under torchrun: join the process group; only rank 0 prints, logs info and shows progress."""
    from .. import distributed as dist

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
    except ConfigError as e:
        for problem in e.problems:  # one line per bad value
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except TinysetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `tinyset info --json | head`: the reader left; stop quietly (and keep Python's exit flush quiet)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished units are kept and the next run resumes from them", file=sys.stderr)
        return 130
    finally:
        from .. import distributed as dist

        dist.cleanup()


if __name__ == "__main__":
    sys.exit(main())
