"""Budget mode: a distilled set costs its bytes. Given a byte budget, choose images per class (IPC)
and bits per value, say why, and never exceed the budget.

Costs are exact and shared with the artifact writer (``quant.inloop.set_cost_bytes``): the set
file's bytes (``set_bytes``: float32 data + int64 labels at 32 bits, as the pipeline stores a float
set; bit-packed codes + the quantizer's float32 state + bit-packed labels below 32 bits; the
safetensors header and the decoder config in both) plus what the label mode needs
(``student_bytes``: nothing for hard labels, the stored soft labels' file, or the online teacher).

Two rules:

- ``search`` (``search_budget``, the default of ``tinyset budget`` and ``distill --budget``): every
  candidate (IPC, bits) point is made from a proxy pool of the training set and scored by a short
  proxy student on a held-out split of the *training* set (never the test set); the curve is
  printed and saved, and the best point wins.
- ``fixed`` (``plan_budget``, the no-search fallback): 3 bits (QuADD's sweet spot) if it fits, etc.
"""
from __future__ import annotations

import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..data.base import Dataset, Split, sample_class_indices
from ..errors import TinysetError
from ..quant.inloop import QuantizerConfig, set_cost_bytes
from ..utils.seeding import derive_seed, generator

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
DEFAULT_CANDIDATES = (32, 8, 4, 3, 2)
# QuADD's finding: at a fixed budget, 2-3 bits per value with more samples is the sweet spot.
PREFERRED_BITS = 3


def set_bytes(ipc: int, bits: int, sample_shape: Sequence[int], num_classes: int, quantizer: str = "uniform",
              granularity: str = "tensor", info=None, qextra: dict | None = None) -> int:
    """Exact ``set_bytes`` of ``ipc`` samples per class at ``bits`` (32 = float32). ``info`` (the
    dataset's kind/mean/std) makes a normalised space's decoder config exact (else an upper
    bound); ``qextra`` are further ``QuantizerConfig`` fields (signed, space, grid, ste, ties)."""
    qcfg = None if bits == 32 else QuantizerConfig(name=quantizer, bits=bits, granularity=granularity, **(qextra or {}))
    return set_cost_bytes(qcfg, ipc * num_classes, tuple(sample_shape), num_classes, info)


@dataclass(frozen=True)
class LabelCost:
    """What the label mode adds to ``set_bytes`` (``student_bytes``): ``hard`` nothing, ``stored``
    the soft-labels file (top ``soft_k`` logits at ``soft_bits``), ``teacher`` its bytes."""

    mode: str = "hard"
    soft_k: int | None = None
    soft_bits: int = 8
    teacher_bytes: int = 0

    def __post_init__(self):
        if self.mode not in ("hard", "stored", "teacher"):
            raise TinysetError(f"label mode must be hard, stored or teacher, got {self.mode!r}")
        if self.mode == "teacher" and self.teacher_bytes <= 0:
            raise TinysetError("the teacher label mode needs the teacher's bytes (artifact.teacher_bytes)")

    def bytes(self, n: int, num_classes: int) -> int:
        if self.mode == "stored":
            from ..quant.soft_labels import soft_label_file_bytes

            return soft_label_file_bytes(n, num_classes, self.soft_k, self.soft_bits)
        return self.teacher_bytes if self.mode == "teacher" else 0


HARD = LabelCost()


def point_bytes(ipc: int, bits: int, sample_shape, num_classes: int, quantizer: str = "uniform",
                granularity: str = "tensor", info=None, labels: LabelCost = HARD, qextra: dict | None = None) -> tuple[int, int, int]:
    """(set_bytes, label_bytes, student_bytes) of one (IPC, bits) point."""
    sb = set_bytes(ipc, bits, sample_shape, num_classes, quantizer, granularity, info, qextra)
    lb = labels.bytes(ipc * num_classes, num_classes)
    return sb, lb, sb + lb


def parse_budget(text: str, sample_shape: Sequence[int], num_classes: int, quantizer: str = "uniform",
                 granularity: str = "tensor", info=None) -> int:
    """``120KiB``, ``1.5MB``, ``250000`` (bytes) or ``ipc10@32`` (the bytes of that set)."""
    s = str(text).strip()
    m = re.fullmatch(r"ipc(\d+)@(\d+)", s, flags=re.I)
    if m:
        ipc, bits = int(m.group(1)), int(m.group(2))
        if ipc < 1 or not (bits == 32 or 1 <= bits <= 8):
            raise TinysetError(f"budget {text!r}: ipc must be >= 1 and bits 1-8 or 32")
        return set_bytes(ipc, bits, sample_shape, num_classes, quantizer, granularity, info)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)", s)
    if not m or m.group(2).lower() not in _UNITS:
        raise TinysetError(f"budget {text!r} must look like 120KiB, 1.5MB, 250000 or ipc10@32")
    value = math.floor(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise TinysetError(f"budget {text!r} is less than one byte")
    return value


@dataclass
class BudgetOption:
    bits: int
    ipc: int  # the most samples per class that fit (capped at max_ipc)
    bytes: int  # student_bytes (= set_bytes with hard labels): what the budget holds
    set_bytes: int = 0
    label_bytes: int = 0

    @property
    def feasible(self) -> bool:
        return self.ipc >= 1


@dataclass
class BudgetPlan:
    budget: int
    options: list[BudgetOption]
    chosen: BudgetOption
    reason: str
    quantizer: str = "uniform"
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| bits | images per class | set_bytes | student_bytes | of budget |", "|---|---|---|---|---|"]
        for o in self.options:
            mark = " (chosen)" if o is self.chosen else ""
            lines.append(f"| {o.bits}{mark} | {o.ipc} | {o.set_bytes} | {o.bytes} | {100 * o.bytes / self.budget:.2f}% |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"rule": "fixed", "budget": self.budget, "quantizer": self.quantizer, "reason": self.reason,
                "options": [o.__dict__ for o in self.options], "chosen": self.chosen.__dict__}


def max_ipc_for(budget: int, bits: int, sample_shape, num_classes: int, quantizer: str, granularity: str,
                cap: int | None = None, info=None, labels: LabelCost = HARD, qextra: dict | None = None) -> int:
    """Largest ipc whose ``student_bytes`` fit in ``budget`` (0 if not even one per class fits)."""
    def fits(ipc: int) -> bool:
        return point_bytes(ipc, bits, sample_shape, num_classes, quantizer, granularity, info, labels, qextra)[2] <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2  # cost is monotone in ipc: double until over (or the cap), then bisect
    while (cap is None or hi <= cap) and fits(hi):
        lo, hi = hi, hi * 2
    if cap is not None and hi > cap:
        if fits(cap):
            return cap
        hi = cap
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _option(budget, bits, sample_shape, num_classes, quantizer, granularity, max_ipc, info, labels, qextra) -> BudgetOption:
    ipc = max_ipc_for(budget, bits, sample_shape, num_classes, quantizer, granularity, max_ipc, info, labels, qextra)
    if not ipc:
        return BudgetOption(bits, 0, 0)
    sb, lb, tot = point_bytes(ipc, bits, sample_shape, num_classes, quantizer, granularity, info, labels, qextra)
    return BudgetOption(bits, ipc, tot, sb, lb)


def check_candidates(candidates: Sequence[int], quantizer: str) -> None:
    bad = [b for b in candidates if not (b == 32 or (isinstance(b, int) and 1 <= b <= 8))]
    if bad or not candidates:
        raise TinysetError(f"budget candidates must be bit widths 1-8 or 32, got {list(candidates)}")
    from ..quant import QUANTIZERS

    top = getattr(QUANTIZERS.get(quantizer), "max_bits", 8) if quantizer in QUANTIZERS else 8
    if any(b > top for b in candidates if b != 32):
        raise TinysetError(f"{quantizer} supports 1-{top} bits; drop the wider candidates or use another quantizer")


def plan_budget(budget: int, sample_shape, num_classes: int, candidates: Sequence[int] = DEFAULT_CANDIDATES,
                quantizer: str = "uniform", granularity: str = "tensor", max_ipc: int | None = None,
                prefer: int = PREFERRED_BITS, info=None, labels: LabelCost = HARD,
                qextra: dict | None = None) -> BudgetPlan:
    """Pick (bits, ipc) for ``budget`` bytes. Rule: the preferred width (3 bits, QuADD's sweet spot)
    if it is a candidate and fits; if even that would need more samples than a class has
    (``max_ipc``), the widest candidate that still holds ``max_ipc`` per class (more precision,
    nothing left to add); otherwise the candidate closest to the preferred width."""
    check_candidates(candidates, quantizer)
    options = [_option(budget, b, sample_shape, num_classes, quantizer, granularity, max_ipc, info, labels, qextra)
               for b in sorted(set(candidates), reverse=True)]
    feasible = [o for o in options if o.feasible]
    if not feasible:
        smallest = min(point_bytes(1, b, sample_shape, num_classes, quantizer, granularity, info, labels, qextra)[2]
                       for b in candidates)
        raise TinysetError(f"budget {budget} B is below the smallest candidate set (1 per class: {smallest} B"
                           + (f", {labels.mode} labels included" if labels.mode != "hard" else "") + ")")
    capped = [o for o in feasible if max_ipc is not None and o.ipc >= max_ipc]
    pref = next((o for o in feasible if o.bits == prefer), None)
    if capped:
        chosen = max(capped, key=lambda o: o.bits)
        reason = (f"{chosen.bits} bits holds all {max_ipc} samples per class within the budget, so the widest such "
                  f"candidate keeps the most precision")
    elif pref is not None:
        chosen = pref
        reason = (f"{prefer} bits per value: QuADD's fixed-budget sweet spot (2-3 bits with more samples beats fewer "
                  f"full-precision samples); {chosen.ipc} per class fit")
    else:
        chosen = min(feasible, key=lambda o: (abs(o.bits - prefer), -o.bits))
        reason = f"{prefer} bits is not a feasible candidate; {chosen.bits} bits is the closest that fits ({chosen.ipc} per class)"
    if chosen.bytes > budget:  # cannot happen by construction; never write an over-budget set
        raise TinysetError(f"internal: plan {chosen} exceeds the budget {budget} B")
    reason += f": {chosen.bytes} of {budget} bytes"
    return BudgetPlan(budget, options, chosen, reason, quantizer)


# --------------------------------------------------------------------------------------------
# The search: candidate points scored by a short proxy student on a held-out training split
# --------------------------------------------------------------------------------------------


class SubsetSplit(Split):
    """Some samples of a split, by index, as a split of their own."""

    def __init__(self, base: Split, indices: torch.Tensor):
        self.base, self.indices = base, indices.long()
        self.targets = base.targets[self.indices] if base.targets is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, idx: torch.Tensor) -> torch.Tensor:
        return self.base.get_batch(self.indices[idx])[0]


@dataclass
class ProxyConfig:
    """The short proxy student that scores each candidate point (never on the test split)."""

    holdout: float = 0.2  # fraction of each class's training samples held out to score the points
    max_holdout: int = 100  # ... at most this many per class
    student: str | None = None  # default: convnet:depth=3,width=32 (images), mlp:hidden=128,depth=2 (vectors)
    steps: int = 300  # optimiser steps per proxy student, the same for every point (epochs follow the set size)
    batch_size: int = 64
    lr: float = 0.01
    seeds: int = 1  # proxy sets + students per point (each seed redraws the set)
    calibrate_steps: int = 50  # post-hoc calibration of a proxy set's quantizer (its clip)
    seed: int = 0

    def student_for(self, info) -> str:
        if self.student:
            return self.student
        if info.kind != "image":
            return "mlp:hidden=128,depth=2"
        return f"convnet:depth={3 if min(info.shape[1:]) >= 16 else 2},width=32"


def parse_points(text: str) -> list[tuple[int | None, int]]:
    """``10@32,40@8,max@3`` -> [(10, 32), (40, 8), (None, 3)] (None: the most that fit)."""
    out = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        m = re.fullmatch(r"(\d+|max)@(\d+)", part, flags=re.I)
        if not m:
            raise TinysetError(f"budget point {part!r} must look like IPC@BITS (10@32) or max@BITS")
        ipc = None if m.group(1).lower() == "max" else int(m.group(1))
        if ipc is not None and ipc < 1:
            raise TinysetError(f"budget point {part!r}: IPC must be at least 1")
        out.append((ipc, int(m.group(2))))
    if not out:
        raise TinysetError("--points lists no point")
    return out


@dataclass
class SearchPoint:
    ipc: int
    bits: int
    set_bytes: int
    label_bytes: int
    student_bytes: int
    accuracies: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else float("nan")

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def name(self) -> str:
        return f"{self.ipc}@{self.bits}"

    def as_dict(self) -> dict:
        return {**self.__dict__, "proxy_accuracy_mean": self.mean, "proxy_accuracy_std": self.std}


@dataclass
class BudgetSearch:
    budget: int
    points: list[SearchPoint]
    chosen: SearchPoint
    reason: str
    quantizer: str = "uniform"
    granularity: str = "tensor"
    label_mode: str = "hard"
    proxy: dict = field(default_factory=dict)

    def table(self) -> str:
        lines = ["| IPC | bits | set_bytes | student_bytes | of budget | proxy accuracy % |", "|---|---|---|---|---|---|"]
        for p in self.points:
            mark = " (chosen)" if p is self.chosen else ""
            acc = f"{p.mean:.2f}" + (f" ± {p.std:.2f}" if len(p.accuracies) > 1 else "")
            lines.append(f"| {p.ipc}{mark} | {p.bits} | {p.set_bytes} | {p.student_bytes} | "
                         f"{100 * p.student_bytes / self.budget:.2f}% | {acc} |")
        return "\n".join(lines)

    def curve(self, width: int = 40) -> str:
        """The curve as text: proxy accuracy against student bytes, one bar per point."""
        pts = sorted(self.points, key=lambda p: p.student_bytes)
        top = max((p.mean for p in pts), default=1.0) or 1.0
        return "\n".join(f"{p.name:>10} {p.student_bytes:>12} B |{'#' * max(1, round(width * p.mean / top))} {p.mean:.2f}%"
                         + ("  <- chosen" if p is self.chosen else "") for p in pts)

    def to_dict(self) -> dict:
        return {"rule": "search", "budget": self.budget, "quantizer": self.quantizer, "granularity": self.granularity,
                "label_mode": self.label_mode, "proxy": self.proxy, "reason": self.reason,
                "curve": [p.as_dict() for p in self.points], "chosen": self.chosen.as_dict()}


def holdout_split(ds: Dataset, proxy: ProxyConfig) -> Dataset:
    """The proxy's dataset: train = the training set less a held-out part of every class, test =
    that held-out part. Built from ``ds.train`` alone: the real test split is never touched."""
    g = generator(derive_seed(proxy.seed, "budget-holdout"))
    pool, held = [], []
    for c in range(ds.info.num_classes):
        idx = ds.train.class_indices(c)
        if len(idx) < 2:
            raise TinysetError(f"class {c} has {len(idx)} training sample(s); the budget search holds out part of each class")
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = min(proxy.max_holdout, max(1, round(proxy.holdout * len(idx))), len(idx) - 1)
        held.append(idx[:n])
        pool.append(idx[n:])
    train, val = SubsetSplit(ds.train, torch.cat(pool)), SubsetSplit(ds.train, torch.cat(held))
    return Dataset(info=ds.info, train=train, test=val)


def proxy_set(pds: Dataset, ipc: int, bits: int, seed: int, quantizer: str, granularity: str, proxy: ProxyConfig,
              qextra: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random real subset of the proxy pool at ``ipc`` per class, quantized post hoc at ``bits``
    (calibrated clip) with the budget's quantizer: the default proxy set of a point."""
    from .compress import CompressConfig, quantize_set

    g = generator(derive_seed(proxy.seed, "budget-proxy-set", ipc, bits, seed))
    k = pds.info.num_classes
    idx = torch.cat([sample_class_indices(pds, c, ipc, g) for c in range(k)])
    x, y = pds.train.get_batch(idx)
    if bits == 32:
        return x.float(), y
    ccfg = CompressConfig(quantizer=quantizer, bits=bits, granularity=granularity,
                          calibrate_steps=proxy.calibrate_steps, **(qextra or {}))
    decoded, _ = quantize_set(x.float(), y, pds.info, ccfg, k)
    return decoded, y


def search_budget(
    ds: Dataset, budget: int, candidates: Sequence[int] = DEFAULT_CANDIDATES, points: Sequence[tuple[int | None, int]] | None = None,
    quantizer: str = "uniform", granularity: str = "tensor", proxy: ProxyConfig | None = None, labels: LabelCost = HARD,
    teacher: torch.nn.Module | None = None, device="cpu", qextra: dict | None = None,
    make_set: Callable[[Dataset, int, int, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> BudgetSearch:
    """Score candidate (IPC, bits) points for ``budget`` bytes and pick the best.

    Points: ``points`` ((ipc or None = the most that fit, bits) pairs), else the most that fit at
    each of ``candidates`` (capped at the proxy pool's smallest class). Every point must fit: its
    ``student_bytes`` (set + the label mode's bytes) is at most ``budget``. Each is made from the
    proxy pool (``make_set(pool_ds, ipc, bits, seed)``, default ``proxy_set``) and scored by a
    short proxy student on the held-out part of the training set (``holdout_split``); the test
    split is never read. The proxy student learns from hard labels, or with ``teacher`` from what
    the label mode gives (stored: the teacher's logits through the stored encoding; teacher:
    online soft labels)."""
    from ..config import EvalConfig, protocol_values
    from ..eval.protocol import stored_targets, train_student

    proxy = proxy or ProxyConfig()
    info = ds.info
    k = info.num_classes
    pds = holdout_split(ds, proxy)
    pool_min = min(len(pds.train.class_indices(c)) for c in range(k))
    if points is None:
        check_candidates(candidates, quantizer)
        points = [(None, b) for b in sorted(set(candidates), reverse=True)]
    else:
        check_candidates([b for _, b in points], quantizer)
    todo: list[SearchPoint] = []
    for ipc, bits in points:
        if ipc is None:
            ipc = max_ipc_for(budget, bits, info.shape, k, quantizer, granularity, pool_min, info, labels, qextra)
            if ipc == 0:
                log.info("budget search: nothing fits at %d bits; point skipped", bits)
                continue
        sb, lb, tot = point_bytes(ipc, bits, info.shape, k, quantizer, granularity, info, labels, qextra)
        if tot > budget:
            raise TinysetError(f"point {ipc}@{bits} needs {tot} bytes ({labels.mode} labels), over the budget of {budget}")
        if all((p.ipc, p.bits) != (ipc, bits) for p in todo):
            todo.append(SearchPoint(ipc, bits, sb, lb, tot))
    if not todo:
        raise TinysetError(f"budget {budget} B holds no candidate point (not even 1 per class at any of {list(candidates)} bits)")
    mode = "hard" if teacher is None else {"hard": "hard", "stored": "stored", "teacher": "soft"}[labels.mode]
    student = proxy.student_for(info)
    for p in todo:
        for s in range(proxy.seeds):
            x, y = (make_set or (lambda d, i, b, sd: proxy_set(d, i, b, sd, quantizer, granularity, proxy, qextra)))(
                pds, p.ipc, p.bits, s)
            n = len(x)
            bs = max(2, min(proxy.batch_size, n))
            epochs = max(1, math.ceil(proxy.steps * bs / n))
            ecfg = EvalConfig(**{**protocol_values("fast"), "protocol": "fast", "student": student, "epochs": epochs,
                                 "batch_size": bs, "lr": proxy.lr, "seeds": 1, "random_baseline": False,
                                 "label_modes": (mode,)})
            z = stored_targets(teacher, x, {"k": labels.soft_k, "bits": labels.soft_bits}, device) if mode == "stored" else None
            acc = train_student(x, y, pds, teacher, ecfg, mode, derive_seed(proxy.seed, "budget-proxy-student", p.name, s),
                                device, channels_last=False, progress=False, desc=f"proxy {p.name}", soft_labels=z)
            p.accuracies.append(acc)
        log.info("budget search: %s (%d B): proxy accuracy %.2f%%", p.name, p.student_bytes, p.mean)
    chosen = max(todo, key=lambda p: (p.mean, -p.student_bytes))
    runner = max((p for p in todo if p is not chosen), key=lambda p: p.mean, default=None)
    reason = (f"{chosen.ipc} per class at {chosen.bits} bits scored best on the held-out split "
              f"({chosen.mean:.2f}%" + (f", next {runner.name} {runner.mean:.2f}%" if runner else "") +
              f"): {chosen.student_bytes} of {budget} bytes")
    held = len(pds.test)
    desc = {**proxy.__dict__, "student": student, "label_mode": mode, "holdout_samples": held,
            "pool_samples": len(pds.train), "split": "training set only (pool + held-out part); the test split is never read"}
    return BudgetSearch(budget, todo, chosen, reason, quantizer, granularity, labels.mode, desc)
