"""The CUDA path: E2D and SRe2L synthesis throughput against the bare teacher forward+backward on
the same GPU, ResNet-18 at 224 px, with bf16 autocast and channels_last on and off (and optionally
``torch.compile``). Runs in a few minutes; needs no files (random 224-px data, random-init teacher:
throughput does not depend on the weights).

    PYTHONPATH=src python benchmarks/gpu.py                 # writes results/gpu.{md,json}
    PYTHONPATH=src python benchmarks/gpu.py --compile       # adds torch.compile rows
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --size 64 --iterations 3   # a smoke run anywhere

Each row: image-iterations per second of the loop (teacher forward+backward images / loop seconds)
and of the bare forward+backward with input gradients on the same batch and settings, and their
ratio. Rows are keyed by (method, amp, channels_last, compile) and resume like every benchmark."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from common import Deadline, Rows, add_max_minutes, bare_throughput, command_line, sync
from tinyset.config import RunConfig
from tinyset.data.base import Dataset, DatasetInfo, TensorSplit
from tinyset.models import get_model
from tinyset.jobs.distill import synthesize
from tinyset.teachers.supervised import Teacher, _freeze

log = logging.getLogger("benchmarks.gpu")


class GpuRows(Rows):
    def key(self, row: dict) -> tuple:
        return (row["dataset"], row["method"], row["amp"], row["channels_last"], row["compile"])


def random_dataset(n_per_class: int, classes: int, size: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_per_class * classes, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    info = DatasetInfo(name=f"random-{size}px", num_classes=classes, class_names=tuple(f"c{i}" for i in range(classes)),
                       shape=(3, size, size), mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29))
    return Dataset(info, TensorSplit(x, y), TensorSplit(x[:classes], y[:classes]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--ipc", type=int, default=10, help="images per class; 10 classes -> a batch of 100")
    p.add_argument("--iterations", type=int, default=40, help="synthesis iterations per run (throughput, not quality)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile'd teachers")
    p.add_argument("--name", default="gpu")
    add_max_minutes(p)
    args = p.parse_args()
    deadline = Deadline(args.max_minutes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; run on a GPU machine or pass --device cpu for a smoke run")
    ds = random_dataset(max(args.ipc, 10), 10, args.size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = GpuRows(args.name, f"Synthesis throughput on {name}: {args.model} at {args.size} px", command_line(), [
        f"Device: {name}; torch {torch.__version__}. Random {args.size}-px data, random-init {args.model} teacher "
        f"(throughput does not depend on weights), {args.ipc * 10} images optimised together, {args.iterations} "
        "iterations per synthesis run (E2D's early stop is off: iterations are forced equal).",
        "img-it/s: teacher forward+backward images per second of the loop; bare: forward+backward with input "
        "gradients on the same batch, amp and memory format; ratio = loop / bare.",
    ], columns=[("method", "method"), ("amp", "bf16 autocast"), ("channels_last", "channels_last"), ("compile", "compile"),
                ("loop_img_per_s", "loop img-it/s"), ("bare_img_per_s", "bare img-it/s"), ("throughput_ratio", "ratio"),
                ("synthesis_seconds", "synthesis s")])
    compiles = [False, True] if args.compile else [False]
    for comp in compiles:
        for amp in (False, True):
            for cl in (False, True):
                todo = [m for m in ("e2d", "sre2l") if not rows.has(method=m, amp=amp, channels_last=cl, compile=comp)]
                if not todo:
                    continue
                torch.manual_seed(0)
                model = _freeze(get_model(f"tv:{args.model}", ds.info).to(device))
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                run_model = torch.compile(model) if comp else model
                ref_bare = bare_throughput(run_model, (3, args.size, args.size), args.ipc * 10, device, amp, cl, iters=20)
                for method in todo:
                    if deadline.passed():
                        break
                    cfg = RunConfig(method=method, ipc=args.ipc, device=args.device, evaluate=False, amp=amp, channels_last=cl)
                    cfg.method_args = {"iterations": args.iterations, "log_every": 0, "batch_size": args.ipc * 10}
                    if method == "e2d":
                        cfg.method_args["eps"] = -1.0  # every crop stays "unsolved": no early stop, equal work
                    with tempfile.TemporaryDirectory() as tmp:
                        teacher = Teacher(run_model, {"source": "random-init"}, Path(tmp))
                        try:
                            sync(device)
                            _, _, summary = synthesize(cfg, ds, teacher, None, progress=False)
                        except Exception as e:  # noqa: BLE001 - a failed setting is a row, not a crash
                            log.warning("%s amp=%s cl=%s compile=%s failed: %s", method, amp, cl, comp, e)
                            continue
                    secs = summary["seconds"] - summary.get("class_stats_seconds", 0.0)
                    loop = summary["teacher_backward_images"] / secs
                    rows.add({"dataset": f"random-{args.size}px", "method": method, "ipc": args.ipc, "bits": 32,
                              "student": None, "seeds": 1, "accuracy_mean": None, "accuracy_std": None,
                              "synthesis_seconds": round(secs, 3), "amp": amp, "channels_last": cl, "compile": comp,
                              "loop_img_per_s": round(loop, 1), "bare_img_per_s": round(ref_bare, 1),
                              "throughput_ratio": round(loop / ref_bare, 3), "model": args.model, "device_name": name,
                              "iterations_run": summary.get("iterations_run")})
                    log.info("%s amp=%s cl=%s compile=%s: %.0f img-it/s, bare %.0f (%.2f)", method, amp, cl, comp, loop,
                             ref_bare, loop / ref_bare)
    print(f"wrote {rows.path} and {rows.path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
