"""Where a recovery step's time goes, at the resolution E2D's claims live (128 px): the full E2D
loop against the bare teacher forward+backward on the same batch, and the loop's parts measured
alone on that batch:

- ``bare``: teacher forward + CE + backward to the input pixels (the floor of any pixel loop);
- ``bn``: the same with the BN-statistics hooks (global + class-conditional moments, EMA) and their
  loss in the graph: the BN-moment cost is ``bn - bare``;
- ``view``: the crop/resample alone (``crop_resize`` forward + backward: one grid_sample);
- ``loop``: a whole step of ``recover`` (E2D, early stop off), so ``loop - bn - view`` is the rest:
  Adam, clamp, the normalise/denormalise copies, crop-memory bookkeeping.

    PYTHONPATH=src python benchmarks/loop_profile.py                       # ConvNet-5 at 128 px, CPU
    PYTHONPATH=src python benchmarks/loop_profile.py --size 32 --model convnet3
    PYTHONPATH=src python benchmarks/loop_profile.py --device cuda --model tv:resnet18 --size 224

Random pixels and a random-init teacher: time does not depend on the weights. Rows (one per
model/size/device) resume like every benchmark; results/loop_profile.{md,json}."""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import Deadline, Rows, add_max_minutes, command_line, sync
from gpu import random_dataset
from tinyset.config import RunConfig
from tinyset.data import augment as A
from tinyset.methods import bn_matching
from tinyset.methods.bn_matching import BNMatcher, bn_layers
from tinyset.models import get_model
from tinyset.jobs.distill import synthesize
from tinyset.teachers.supervised import Teacher, _freeze

log = logging.getLogger("benchmarks.loop_profile")


class ProfileRows(Rows):
    def key(self, row: dict) -> tuple:
        return (row["dataset"], row["method"], row["model"], row["device"], row["amp"])


def timed(fn, iters: int, device) -> float:
    """Seconds per call of ``fn`` after 3 warm-up calls."""
    for _ in range(3):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def autograd_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The moments as tinyset computed them before the one-pass backward: plain autograd through
    mean and square (the "before" of the BN-moment cost, measured in the same run)."""
    x = x.float()
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        rows = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])
        return rows.mean(1), (rows * rows).mean(1)
    return x.mean(dim=(2, 3)), (x * x).mean(dim=(2, 3))


def parts(model, n: int, size: int, classes: int, device, amp: bool, iters: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = (torch.arange(n) % classes).to(device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def fwd_bwd(extra=None):
        x.grad = None
        with ctx:
            logits = model(x).float()
        loss = F.cross_entropy(logits, y)
        if extra is not None:
            loss = loss + 0.1 * extra()
        loss.backward()

    out = {"bare": timed(fwd_bwd, iters, device)}
    layers = bn_layers(model)
    class_targets = [(l.running_mean.expand(classes, -1).clone(), l.running_var.expand(classes, -1).clone()) for l in layers]
    matcher = BNMatcher(model, 10.0, class_targets, 0.8)

    def with_bn():
        matcher.start(y)
        fwd_bwd(matcher.loss)

    out["bn"] = timed(with_bn, iters, device)
    fused = bn_matching._per_image_moments
    bn_matching._per_image_moments = autograd_moments  # the hooks look it up at call time
    try:
        out["bn_autograd"] = timed(with_bn, iters, device)
    finally:
        bn_matching._per_image_moments = fused
    matcher.remove()
    boxes = A.sample_rrc_boxes(n, size, size, (0.5, 1.0), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    w = torch.randn(n, 3, size, size, generator=g).to(device)

    def view():
        x.grad = None
        (A.crop_resize(x, boxes, (size, size), flips) * w).sum().backward()

    out["view"] = timed(view, iters, device)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model", default="convnet5")
    p.add_argument("--ipc", type=int, default=10, help="images per class; 10 classes -> a batch of 100")
    p.add_argument("--iterations", type=int, default=10, help="loop iterations timed (and per part)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--name", default="loop_profile")
    add_max_minutes(p)  # one row of about a minute: the flag only keeps the benchmarks' common interface
    args = p.parse_args()
    if Deadline(args.max_minutes).passed():
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    n = args.ipc * 10
    ds = random_dataset(max(args.ipc, 10), 10, args.size)
    rows = ProfileRows(args.name, "Where a recovery step's time goes (E2D loop vs bare teacher forward+backward)",
                       command_line(), [
        "Random pixels, random-init teacher (time does not depend on weights); batch = 10 classes x IPC images; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, channels_last.",
        "ms per step. bare: teacher forward + CE + backward to the pixels; bn: the same with the BN-statistics hooks "
        "(global + class moments, EMA 0.8) and their loss; view: crop_resize forward + backward alone; loop: one step of "
        "the E2D loop (early stop off); rest = loop - bn - view (Adam, clamp, copies, crop memory).",
        "ratio = bare / loop (the issue's synthesis / bare throughput). The moments' backward is one hand-written pass "
        "(methods/bn_matching._PerImageMoments); 'autograd' columns time the same hooks with plain autograd through mean "
        "and square (tinyset before), in the same run: ratio, autograd moments = bare / (loop - bn + bn_autograd).",
    ], columns=[("model", "teacher"), ("dataset", "data"), ("device", "device"), ("amp", "bf16"), ("batch", "batch"),
                ("bare_ms_per_image", "bare ms / image"), ("bare_ms", "bare ms"),
                ("bn_ms", "bn ms"), ("bn_cost_ms", "BN-moment cost ms"), ("bn_cost_autograd_ms", "BN-moment cost, autograd ms"),
                ("view_ms", "crop/resample ms"), ("loop_ms", "loop ms"), ("rest_ms", "rest ms"),
                ("throughput_ratio", "ratio"), ("throughput_ratio_autograd", "ratio, autograd moments")])
    key = dict(dataset=f"random-{args.size}px", method="e2d", model=args.model, device=args.device, amp=args.amp)
    if rows.has(**key):
        print(f"{rows.path} already has this row")
        return
    torch.manual_seed(0)
    model = _freeze(get_model(args.model, ds.info).to(device)).to(memory_format=torch.channels_last)
    pt = parts(model, n, args.size, 10, device, args.amp, args.iterations)
    cfg = RunConfig(method="e2d", ipc=args.ipc, device=args.device, evaluate=False, amp=args.amp, channels_last=True)
    cfg.method_args = {"iterations": args.iterations + 3, "log_every": 0, "batch_size": n, "eps": -1.0}
    with tempfile.TemporaryDirectory() as tmp:
        _, _, summary = synthesize(cfg, ds, Teacher(model, {"source": "random-init"}, Path(tmp)), None, progress=False)
    loop = (summary["seconds"] - summary.get("class_stats_seconds", 0.0)) / summary["iterations_run"]
    ms = {k: 1000 * v for k, v in pt.items()}
    ms["loop"] = 1000 * loop
    row = {**key, "ipc": args.ipc, "bits": 32, "student": None, "seeds": 1, "accuracy_mean": None, "accuracy_std": None,
           "synthesis_seconds": round(summary["seconds"] - summary.get("class_stats_seconds", 0.0), 2),
           "bare_ms": round(ms["bare"], 1), "bn_ms": round(ms["bn"], 1), "bn_cost_ms": round(ms["bn"] - ms["bare"], 1),
           "view_ms": round(ms["view"], 1), "loop_ms": round(ms["loop"], 1),
           "rest_ms": round(ms["loop"] - ms["bn"] - ms["view"], 1), "throughput_ratio": round(ms["bare"] / ms["loop"], 3),
           "bn_autograd_ms": round(ms["bn_autograd"], 1), "bn_cost_autograd_ms": round(ms["bn_autograd"] - ms["bare"], 1),
           # the loop as it was with autograd moments: the same loop, the moments' cost swapped back
           "throughput_ratio_autograd": round(ms["bare"] / (ms["loop"] - ms["bn"] + ms["bn_autograd"]), 3),
           "threads": torch.get_num_threads(), "iterations": args.iterations, "batch": n,
           "bare_ms_per_image": round(ms["bare"] / n, 2)}
    rows.add(row)
    log.info("%s", row)
    print(f"wrote {rows.path} and {rows.path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
