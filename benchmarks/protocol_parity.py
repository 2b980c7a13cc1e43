"""Parity with the reference evaluator: a random real CIFAR-10 subset at IPC 10, trained under a
named evaluation protocol with the pinned ConvNet-3 teacher, 5 paired seeds (seed s redraws the
subset AND trains the student). RDED's own evaluation script gave 57.0% to such a subset with an
82.1% ConvNet-3 teacher; the target is within 2.5 points of it under the ``rded`` protocol.

Extra rows (``--protocols``) are the factor table: a protocol name with dotted overrides after a
colon, e.g. ``rded:temperature=4`` or ``rded:augment=rrc,crop_scale=[0.5,1]``.

    python benchmarks/protocol_parity.py --data-root ../shared/data [--protocols rded fast ...] [--max-minutes M]
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

from common import WORK, Rows, add_max_minutes, begin, mean_std, paired_seeds
from pinned import add_teacher_args, dataset_and_teacher
from tinyset.config import RunConfig, build_config, describe_protocol, to_dict
from tinyset.eval.protocol import random_subset, train_student
from tinyset.utils.seeding import derive_seed

log = logging.getLogger("benchmarks.protocol_parity")
REFERENCE = 57.0  # RDED's evaluator on a random CIFAR-10 IPC 10 subset (82.1% ConvNet-3 teacher)


def eval_config(spec: str, student: str):
    """``rded`` or ``rded:temperature=4,augment=rrc`` -> the resolved EvalConfig."""
    name, _, rest = spec.partition(":")
    overrides = [f"eval.protocol={name}", f"eval.student={student}"]
    for part in filter(None, _split(rest)):
        overrides.append(f"eval.{part}")
    return build_config(RunConfig, None, overrides).eval


def _split(text: str) -> list[str]:
    """Split on commas outside brackets (``crop_scale=[0.5,1],temperature=4``)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur] if cur else out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--protocols", nargs="+", default=["rded"], help="rows: protocol[:key=value,...]")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--student", default="convnet3")
    p.add_argument("--results", default="protocol_parity")
    add_teacher_args(p, "cifar10-convnet3")
    add_max_minutes(p)
    args = p.parse_args()
    cmd, deadline = begin(args)
    ds, teacher = dataset_and_teacher(args)
    t_acc = teacher.reference["test_accuracy"]
    notes = [
        f"CIFAR-10 random real subset, IPC {args.ipc}, student {args.student}; teacher: pinned `{args.pinned_teacher}` "
        f"({t_acc:.2f}% test; the reference figure used an 82.1% teacher, comparable within a point).",
        f"Reference: RDED's evaluation script gave {REFERENCE}% to a random subset (two seeds: 55.9, 58.1). "
        "Target: the `rded` row within 2.5 points of it.",
        "Seeds are paired: seed s redraws the subset (per-class, without replacement) and trains one student; "
        "mean ± std over seeds. Last-epoch test accuracy on the 10,000 test images.",
        "protocol = the named preset (`tinyset protocols`) with any overrides in brackets.",
    ]
    columns = [("protocol", "protocol"), ("ipc", "IPC"), ("seeds", "seeds"), ("accuracy", "accuracy % (mean ± std)"),
               ("vs_reference", "vs 57.0"), ("eval_seconds", "s / student"), ("teacher_accuracy", "teacher %")]
    rows = Rows(args.results, "Evaluation protocol parity: random CIFAR-10 subset at IPC 10", cmd, notes, columns)
    rows.key = lambda r: (r["dataset"], r["method"], r["ipc"], r["protocol"])
    for spec in args.protocols:
        ecfg = eval_config(spec, args.student)
        proto = describe_protocol(ecfg)
        if rows.has(protocol=proto, ipc=args.ipc) or deadline.passed():
            continue
        labels = torch.arange(ds.info.num_classes).repeat_interleave(args.ipc)

        def run_seed(s: int) -> dict:
            x, y = random_subset(ds, labels, derive_seed(0, "random-subset", s))
            t0 = time.perf_counter()
            acc = train_student(x, y, ds, teacher.model, ecfg, "soft", derive_seed(0, "eval", s), "cpu",
                                progress=False, desc=f"{proto} seed {s}")
            log.info("%s seed %d: %.2f%%", proto, s, acc)
            return {"accuracy": acc, "eval_seconds": time.perf_counter() - t0}

        safe = "".join(c if c.isalnum() else "_" for c in proto)
        recs = paired_seeds(WORK / f"protocol_parity-ipc{args.ipc}-{safe}", args.seeds, run_seed, deadline)
        if recs is None:
            break
        accs = [r["accuracy"] for r in recs]
        mean, std = mean_std(accs)
        rows.add({"dataset": "cifar10", "method": "random", "ipc": args.ipc, "bits": 32, "student": args.student,
                  "protocol": proto, "seeds": len(accs), "accuracy_mean": mean, "accuracy_std": std,
                  "accuracies": accs, "synthesis_seconds": 0.0, "vs_reference": round(mean - REFERENCE, 2),
                  "eval_seconds": round(sum(r["eval_seconds"] for r in recs) / len(recs), 1),
                  "teacher": args.pinned_teacher, "teacher_accuracy": t_acc, "eval_config": to_dict(ecfg),
                  "class_names": list(ds.info.class_names)})
        print(f"{proto}: {mean:.2f} ± {std:.2f} ({len(accs)} seeds)", flush=True)
    print(f"wrote {rows.path}")


if __name__ == "__main__":
    main()
