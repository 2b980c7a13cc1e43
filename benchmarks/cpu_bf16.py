"""bf16 autocast on this CPU: images/s of the three kinds of step every table pays for, float32
against bf16, channels_last on and off, at 32/64/128 px:

- train: forward + CE + backward to the parameters + SGD step (teachers and students);
- pixels: forward + CE + backward to the input pixels (the recovery loop of E2D/SRe2L);
- forward: no-grad forward (soft labels from a teacher, RDED's scoring).

The accuracy side of the question (teacher and student fp32 vs bf16) is in the protocol_parity and
teacher YAML rows; this file is only speed.

    python benchmarks/cpu_bf16.py [--sizes 32 64 128] [--max-minutes M]"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import Deadline, Rows, add_max_minutes, command_line
from tinyset.data.base import DatasetInfo
from tinyset.models import get_model
from tinyset.utils.hardware import cpu_has_native_bf16

MODELS = {32: "convnet3", 64: "convnet4", 128: "convnet5"}


def rate(model, px: int, kind: str, amp: bool, channels_last: bool, batch: int, iters: int) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.rand(batch, 3, px, px).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train(kind != "forward")
    for i in range(iters + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            if kind == "forward":
                with torch.no_grad():
                    model(x)
                continue
            xi = x.clone().requires_grad_(kind == "pixels")
            loss = F.cross_entropy(model(xi).float(), y)
        if kind == "train":
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            torch.autograd.grad(loss, xi)
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    add_max_minutes(p)
    args = p.parse_args()
    cmd = command_line()
    print(f"reproduce with: {cmd}", flush=True)
    deadline = Deadline(args.max_minutes)
    rows = Rows("cpu_bf16", "bf16 autocast vs float32 on this CPU (images/s)", cmd, [
        "train = forward + CE + backward to the parameters + SGD step; pixels = backward to the input pixels "
        "(recovery loop); forward = no-grad forward. Batch 100 at 32 px, 50 at 64 px, 20 at 128 px; 2 warm-up steps.",
        "bf16 = torch.autocast('cpu', dtype=torch.bfloat16): convolutions and matmuls in bf16, BatchNorm and the "
        f"loss in float32. This CPU's native bf16 (avx512_bf16 or amx_bf16): {'yes' if cpu_has_native_bf16() else 'no'}; "
        "without it PyTorch emulates bf16 and amp stays off (an accuracy-parity check only matters where bf16 is faster).",
        "Seconds are wall-clock on 2 shared cores: compare rows of one run.",
    ], columns=[("method", "step"), ("image_size", "px"), ("student", "model"), ("channels_last", "channels_last"),
                ("fp32_img_per_s", "fp32 img/s"), ("bf16_img_per_s", "bf16 img/s"), ("speedup", "bf16 / fp32")])
    rows.key = lambda r: (r["method"], r["image_size"], r["channels_last"])
    for px in args.sizes:
        info = DatasetInfo("bench", 10, tuple(map(str, range(10))), (3, px, px), (0.5,) * 3, (0.25,) * 3)
        batch, iters = {32: (100, 8), 64: (50, 6), 128: (20, 4)}.get(px, (20, 4))
        for kind in ("train", "pixels", "forward"):
            for cl in (True, False):
                if rows.has(method=kind, image_size=px, channels_last=cl) or deadline.passed():
                    continue
                torch.manual_seed(0)
                model = get_model(MODELS.get(px, "convnet3"), info)
                fp32 = rate(model, px, kind, False, cl, batch, iters)
                bf16 = rate(model, px, kind, True, cl, batch, iters)
                rows.add({"dataset": f"random-{px}px", "method": kind, "ipc": None, "bits": 32, "student": MODELS.get(px),
                          "protocol": None, "seeds": 1, "accuracy_mean": None, "accuracy_std": None,
                          "synthesis_seconds": None, "image_size": px, "channels_last": cl, "batch": batch,
                          "fp32_img_per_s": round(fp32, 1), "bf16_img_per_s": round(bf16, 1),
                          "speedup": round(bf16 / fp32, 2), "torch_threads": torch.get_num_threads()})
                print(f"{kind} {px}px channels_last={cl}: fp32 {fp32:.0f} img/s, bf16 {bf16:.0f} img/s", flush=True)
    print(f"wrote {rows.path}")


if __name__ == "__main__":
    main()
