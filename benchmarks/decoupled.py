"""Decoupled distillation side by side on CIFAR-10: random, RDED, SRe2L and E2D on one cached
ConvNet-3 teacher, the same student protocol for all, several seeds, last-epoch accuracy; plus
E2D ablations (no crop memory, noise start, iteration budget) and synthesis cost against the
teacher's own forward+backward throughput.

    python benchmarks/decoupled.py --data-root ../shared/data

Rows are written as they finish; a rerun skips rows already in results/decoupled_cifar10.json."""
from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import Rows, command_line
from tinyset.artifact import load_artifact
from tinyset.config import DataConfig, EvalConfig, RunConfig, TeacherConfig
from tinyset.data import load_dataset
from tinyset.eval.protocol import train_student
from tinyset.kd.energy import DEFAULT_ENERGY_DIRECTION
from tinyset.methods.bn_matching import cached_class_statistics
from tinyset.pipeline import distill
from tinyset.teacher import get_teacher
from tinyset.utils.seeding import derive_seed

HERE = Path(__file__).parent
log = logging.getLogger("benchmarks.decoupled")

MAIN = {"random": ("random", {}), "rded": ("rded", {}), "sre2l": ("sre2l", {}), "e2d": ("e2d", {})}
ABLATIONS = {"e2d_no_memory": ("e2d", {"memory": False}), "e2d_noise_init": ("e2d", {"init": "noise"})}


def bare_throughput(teacher, shape, batch=100, iters=20, channels_last=True) -> float:
    """Images/s of the bare teacher forward+backward with input gradients (the floor of any
    pixel-optimisation loop) on the synthesis batch size."""
    x = torch.rand(batch, *shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = torch.randint(0, 10, (batch,))
    for i in range(iters + 3):
        if i == 3:
            t0 = time.perf_counter()
        x.grad = None
        F.cross_entropy(teacher(x), y).backward()
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    p.add_argument("--main-seeds", type=int, default=5)
    p.add_argument("--ablation-seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, nargs=2, default=[100, 30], metavar=("IPC10", "IPC50"), help="student epochs per IPC")
    p.add_argument("--iteration-budgets", type=int, nargs="*", default=[100, 400])
    p.add_argument("--eval-loss", nargs="+", default=["kd"], help="kd and/or energy_kd (energy rows only for IPC 10 main methods)")
    p.add_argument("--only", nargs="*", help="limit to these method names")
    p.add_argument("--cache", default=str(HERE / "cache"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    tcfg = TeacherConfig(model="convnet3", epochs=10, cache_dir=args.cache)
    ds = load_dataset("cifar10", DataConfig(dataset="cifar10", data_root=args.data_root))
    teacher = get_teacher(ds, tcfg, "cpu", progress=False)
    stats_t0 = time.perf_counter()
    _, stats_secs = cached_class_statistics(teacher.model, ds, torch.device("cpu"), teacher.directory, progress=False)
    if stats_secs == 0.0:
        stats_secs = float((teacher.directory / "class_stats_seconds.txt").read_text()) if (teacher.directory / "class_stats_seconds.txt").exists() else time.perf_counter() - stats_t0
    else:
        (teacher.directory / "class_stats_seconds.txt").write_text(str(stats_secs))
    bare = bare_throughput(teacher.model, ds.info.shape)
    notes = [
        f"CIFAR-10 from npz; teacher ConvNet-3 (width 128, BatchNorm) trained here for {tcfg.epochs} epochs: "
        f"{teacher.reference['test_accuracy']:.2f}% test accuracy; cached and shared by every row.",
        "Student protocol (same for all rows): ConvNet-3, teacher soft labels computed online on each augmented view "
        "(RandomResizedCrop scale 0.5-1, flip, CutMix p=1), KL at T=4, AdamW lr 0.01 wd 0.01, batch 50, cosine; "
        f"{args.epochs[0]} epochs at IPC 10, {args.epochs[1]} at IPC 50 (CPU budget; the papers use 300-1000). "
        "Last-epoch test accuracy, mean ± std over seeds; each set synthesised once (seed 0).",
        f"Bare teacher forward+backward (input gradients, batch 100, channels_last): {bare:.0f} images/s. "
        f"E2D's class-conditional BN statistics: a one-off pass over the training set, {stats_secs:.0f}s, cached with "
        "the teacher and not included in synthesis_seconds (add it once per teacher).",
        "iterations run: summed over the units of a set (IPC 50 runs 5 units of 100 images, so 5,000 is the budget).",
        "A gap under two standard deviations is no gap.",
    ]
    rows = Rows("decoupled_cifar10", "Decoupled distillation on CIFAR-10 (ConvNet-3 teacher and student)", command_line(), notes)

    plan: list[tuple[int, str, str, dict, int]] = []
    for ipc in args.ipc:
        for name, (m, a) in MAIN.items():
            plan.append((ipc, name, m, a, args.main_seeds if ipc == args.ipc[0] else args.ablation_seeds))
    first = args.ipc[0]
    for name, (m, a) in ABLATIONS.items():
        plan.append((first, name, m, a, args.ablation_seeds))
    for n in args.iteration_budgets:
        plan.append((first, f"e2d_iters_{n}", "e2d", {"iterations": n}, args.ablation_seeds))

    for eval_loss in args.eval_loss:
        for ipc, name, method, margs, seeds in plan:
            if args.only and name not in args.only:
                continue
            if eval_loss != "kd" and (ipc != first or name not in MAIN):
                continue
            if rows.has(method=name, ipc=ipc, eval_loss=eval_loss):
                continue
            out = HERE / "work" / f"cifar10-{name}-ipc{ipc}"
            bare_file = out.with_name(out.name + ".bare_img_per_s")
            if not out.exists():
                # the bare teacher throughput is measured right beside the run it is compared with
                bare_file.parent.mkdir(parents=True, exist_ok=True)
                bare_file.write_text(str(bare_throughput(teacher.model, ds.info.shape)))
                cfg = RunConfig(method=method, ipc=ipc, device="cpu", teacher=tcfg, evaluate=False,
                                data=DataConfig(dataset="cifar10", data_root=args.data_root))
                cfg.method_args = dict(margs)
                if method in ("e2d", "sre2l"):
                    cfg.method_args.setdefault("log_every", 0)
                distill(cfg, out, progress=False)
            art = load_artifact(out)
            syn = art.manifest["synthesis"]
            loop_secs = syn["seconds"] - syn.get("class_stats_seconds", 0.0)
            epochs = args.epochs[0] if ipc == args.ipc[0] else args.epochs[1]
            ecfg = EvalConfig(student="convnet3", epochs=epochs, lr=0.01, weight_decay=0.01, batch_size=50,
                              loss=eval_loss, temperature=4.0, seeds=seeds, crop_scale=(0.5, 1.0), cutmix=1.0,
                              random_baseline=False)
            accs, t0 = [], time.perf_counter()
            for s in range(seeds):
                accs.append(train_student(art.images, art.labels, ds, teacher.model, ecfg, "soft",
                                          derive_seed(0, "eval", s), "cpu", progress=False, desc=f"{name} seed {s}"))
                log.info("%s ipc %d %s seed %d: %.2f%%", name, ipc, eval_loss, s, accs[-1])
            row_bare = float(bare_file.read_text()) if bare_file.exists() else bare
            back = syn["teacher_backward_images"]
            rate = back / loop_secs if back and loop_secs > 0 else None
            rows.add({
                "dataset": "cifar10", "method": name, "ipc": ipc, "bits": 32, "student": "convnet3", "seeds": seeds,
                "accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.stdev(accs) if seeds > 1 else 0.0,
                "accuracies": accs, "synthesis_seconds": round(loop_secs, 2), "eval_loss": eval_loss,
                "energy_direction": DEFAULT_ENERGY_DIRECTION if eval_loss.startswith("energy") else None,
                "teacher_forward_images": syn["teacher_forward_images"], "teacher_backward_images": back,
                "synthesis_img_per_s": rate, "bare_teacher_img_per_s": row_bare,
                "throughput_ratio": (rate / row_bare) if rate else None,
                "iterations_run": syn.get("iterations_run"), "iterations_saved": syn.get("iterations_saved"),
                "method_config": art.manifest["method_config"], "eval_epochs": epochs,
                "eval_seconds": time.perf_counter() - t0, "teacher_accuracy": teacher.reference["test_accuracy"],
            })
    print(f"wrote {rows.path} and {rows.path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
