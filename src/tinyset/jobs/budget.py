"""Budget mode: a distilled set costs its bytes. Given a byte budget, choose images per class and
bits per value from a candidate list, say why, and never exceed the budget.

Costs are exact and shared with the artifact writer (``quant.inloop.set_cost_bytes``): float32
data + int64 labels at 32 bits (as the pipeline stores a float set); bit-packed codes + the
quantizer's float32 state + bit-packed labels below 32 bits."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import TinysetError
from ..quant.inloop import QuantizerConfig, set_cost_bytes

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
DEFAULT_CANDIDATES = (32, 8, 4, 3, 2)
# QuADD's finding: at a fixed budget, 2-3 bits per value with more samples is the sweet spot.
PREFERRED_BITS = 3


def set_bytes(ipc: int, bits: int, sample_shape: Sequence[int], num_classes: int, quantizer: str = "uniform",
              granularity: str = "tensor") -> int:
    """Exact stored bytes of ``ipc`` samples per class at ``bits`` (32 = float32)."""
    qcfg = None if bits == 32 else QuantizerConfig(name=quantizer, bits=bits, granularity=granularity)
    return set_cost_bytes(qcfg, ipc * num_classes, tuple(sample_shape), num_classes)


def parse_budget(text: str, sample_shape: Sequence[int], num_classes: int, quantizer: str = "uniform",
                 granularity: str = "tensor") -> int:
    """``120KiB``, ``1.5MB``, ``250000`` (bytes) or ``ipc10@32`` (the bytes of that set)."""
    s = str(text).strip()
    m = re.fullmatch(r"ipc(\d+)@(\d+)", s, flags=re.I)
    if m:
        ipc, bits = int(m.group(1)), int(m.group(2))
        if ipc < 1 or not (bits == 32 or 1 <= bits <= 8):
            raise TinysetError(f"budget {text!r}: ipc must be >= 1 and bits 1-8 or 32")
        return set_bytes(ipc, bits, sample_shape, num_classes, quantizer, granularity)
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
    bytes: int

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
        lines = ["| bits | images per class | bytes | of budget |", "|---|---|---|---|"]
        for o in self.options:
            mark = " (chosen)" if o is self.chosen else ""
            lines.append(f"| {o.bits}{mark} | {o.ipc} | {o.bytes} | {100 * o.bytes / self.budget:.2f}% |")
        return "\n".join(lines)


def max_ipc_for(budget: int, bits: int, sample_shape, num_classes: int, quantizer: str, granularity: str,
                cap: int | None = None) -> int:
    """Largest ipc whose set fits in ``budget`` bytes (0 if not even one per class fits)."""
    per = set_bytes(1, bits, sample_shape, num_classes, quantizer, granularity)
    hi = max(1, budget // max(1, per - 64) + 2)  # per-sample cost is ~linear; search below this bound
    if cap is not None:
        hi = min(hi, cap)
    lo = 0
    while lo < hi:  # cost is monotone in ipc: binary search the last ipc that fits
        mid = (lo + hi + 1) // 2
        if set_bytes(mid, bits, sample_shape, num_classes, quantizer, granularity) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_budget(budget: int, sample_shape, num_classes: int, candidates: Sequence[int] = DEFAULT_CANDIDATES,
                quantizer: str = "uniform", granularity: str = "tensor", max_ipc: int | None = None,
                prefer: int = PREFERRED_BITS) -> BudgetPlan:
    """Pick (bits, ipc) for ``budget`` bytes. Rule: the preferred width (3 bits, QuADD's sweet spot)
    if it is a candidate and fits; if even that would need more samples than a class has
    (``max_ipc``), the widest candidate that still holds ``max_ipc`` per class (more precision,
    nothing left to add); otherwise the candidate closest to the preferred width."""
    bad = [b for b in candidates if not (b == 32 or (isinstance(b, int) and 1 <= b <= 8))]
    if bad or not candidates:
        raise TinysetError(f"budget candidates must be bit widths 1-8 or 32, got {list(candidates)}")
    from ..quant import QUANTIZERS

    top = getattr(QUANTIZERS.get(quantizer), "max_bits", 8) if quantizer in QUANTIZERS else 8
    if any(b > top for b in candidates if b != 32):
        raise TinysetError(f"{quantizer} supports 1-{top} bits; drop the wider candidates or use another quantizer")
    options = []
    for b in sorted(set(candidates), reverse=True):
        ipc = max_ipc_for(budget, b, sample_shape, num_classes, quantizer, granularity, max_ipc)
        options.append(BudgetOption(b, ipc, set_bytes(ipc, b, sample_shape, num_classes, quantizer, granularity) if ipc else 0))
    feasible = [o for o in options if o.feasible]
    if not feasible:
        smallest = min(set_bytes(1, b, sample_shape, num_classes, quantizer, granularity) for b in candidates)
        raise TinysetError(f"budget {budget} B is below the smallest candidate set (1 per class: {smallest} B)")
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
