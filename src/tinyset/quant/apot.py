"""APoT: additive powers-of-two levels (Li, Dong & Wang, ICLR 2020) with a learnable clip alpha.

Level sets (normalised to a largest level of 1, then scaled by alpha):
- unsigned ``b`` bits: sums of one term from each of the reference's base sets
  (``build_power_value(B)``) for b = 2..6, e.g. 2 bits {0, 1/4, 1/2, 1}; 6 bits is the three-term
  set {a + b + c}, a in {0, 2^-1, 2^-4, 2^-7}, b in {0, 2^-2, 2^-5, 2^-8}, c in {0, 2^-3, 2^-6,
  2^-9}, over 7/8; 1 bit is {0, 1} (the reference returns NaN there);
- signed ``b`` bits: +- the unsigned (b-1)-bit magnitudes, 2**b - 1 levels (one code unused):
  3 bits {0, +-1/4, +-1/2, +-1}, 2 bits ternary {0, +-1}; 1 bit is {-1, +1}. Signed 6 bits uses the
  5-bit magnitudes (the reference's 6-bit weights); codes take ``b`` bits either way.

Levels are the exact rationals rounded once to float32; the reference multiplies by a float32
reciprocal of the largest sum, which differs by 1 ulp on 5 of the 32 5-bit levels and 20 of the 64
6-bit levels (none below 5 bits). The signed sets' zero is stored as -0.0 (as it always was).

Rounding to the nearest level; an exact tie (x at the midpoint of two levels) goes, with
``ties="away"`` (default), to the level of larger magnitude (up for x >= 0, down below: ties on
|x|, so the signed sets are odd, q(-x) = -q(x)). ``ties="down"`` sends every tie toward -inf
(tinyset's rule before ``ties`` existed, and what a stored config without it means). The
reference breaks ties on |x| too, but toward whichever tied level its unordered level set lists
first, which is no fixed direction.

Gradient (RCF, reparameterised clipping): for u = x / alpha, d/dalpha = q(u) - u inside the
range and sign(u) outside (0 below zero for unsigned), so every element contributes;
d/dx = 1 inside, 0 outside (``ste="calibrated"``: 1 everywhere, the reference's calibrated
gradient)."""
from __future__ import annotations

import itertools
from functools import lru_cache

import torch

from ..errors import TinysetError
from .base import Quantizer, check_choice, per_group_reduce, register_quantizer

_EPS = 1e-8


def _bases(b: int) -> list[list[float]]:
    """The reference's base sets for unsigned ``b``-bit APoT (k = 2 additive terms)."""
    a, bb, c = [0.0], [0.0], [0.0]
    if b == 2:
        a += [2.0 ** (-i - 1) for i in range(3)]
    elif b == 3:
        a += [2.0**-1, 2.0**-2, 2.0**-4]
        bb += [2.0**-3]
    elif b == 4:
        for i in range(3):
            a.append(2.0 ** (-2 * i - 1))
            bb.append(2.0 ** (-2 * i - 2))
    elif b == 5:
        for i in range(3):
            if i < 2:
                a.append(2.0 ** (-2 * i - 1))
                bb.append(2.0 ** (-2 * i - 2))
            else:
                c.append(2.0 ** (-2 * i - 1))
                a.append(2.0 ** (-2 * i - 2))
                bb.append(2.0 ** (-2 * i - 3))
    elif b == 6:  # three terms, each with its own exponents 3i+1, 3i+2, 3i+3
        for i in range(3):
            a.append(2.0 ** (-3 * i - 1))
            bb.append(2.0 ** (-3 * i - 2))
            c.append(2.0 ** (-3 * i - 3))
    return [a, bb, c]


@lru_cache(maxsize=None)
def _levels(bits: int, signed: bool) -> tuple[float, ...]:
    if signed:
        if bits == 1:
            return (-1.0, 1.0)
        mags = _levels(bits - 1, False)
        return tuple(sorted({-m for m in mags} | set(mags)))
    if bits == 1:
        return (0.0, 1.0)
    vals = {x + y + z for x, y, z in itertools.product(*_bases(bits))}
    top = max(vals)
    out = tuple(sorted(v / top for v in vals))
    if len(out) != 1 << bits:  # the construction must use every code
        raise TinysetError(f"APoT {bits}-bit level set has {len(out)} levels, expected {1 << bits}")
    return out


def apot_levels(bits: int, signed: bool) -> torch.Tensor:
    """Sorted APoT level set in [-1, 1] (signed) or [0, 1] (unsigned), float32."""
    if not 1 <= bits <= APoTQuantizer.max_bits:
        raise TinysetError(f"APoT supports 1 to {APoTQuantizer.max_bits} bits, got {bits}")
    return torch.tensor(_levels(bits, signed), dtype=torch.float32)


TIES = ("away", "down")


@register_quantizer("apot", "additive powers-of-two levels, 1-6 bits, learnable clip alpha with the RCF gradient")
class APoTQuantizer(Quantizer):
    max_bits = 6
    default_signed = True

    def __init__(self, bits: int, granularity: str = "tensor", signed: bool = True, ste: str = "clipped",
                 ties: str = "away"):
        super().__init__(bits, granularity, signed, ste)
        self.ties = check_choice(ties, TIES, "apot ties")
        table = apot_levels(bits, signed)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("mids", (table[1:] + table[:-1]) / 2, persistent=False)

    def config(self):
        return {**super().config(), "ties": self.ties}

    @classmethod
    def legacy_config(cls, config):
        return super().legacy_config({"ties": "down", **config})

    def _index(self, u: torch.Tensor) -> torch.Tensor:
        """Index of the nearest level to ``u`` (already clipped), ties as ``self.ties`` says."""
        u = u.detach().contiguous()
        mids = self.mids.to(u.device)
        down = torch.bucketize(u, mids)  # a tie (u == mid) takes the lower level
        if self.ties == "down":
            return down
        return torch.where(u >= 0, torch.bucketize(u, mids, right=True), down)

    def param_names(self):
        return ["alpha"]

    def _init_params(self, x):
        src = x.abs() if self.signed else x.clamp_min(0)
        return {"alpha": per_group_reduce(src, self.granularity, lambda r: r.amax(dim=1)).clamp_min(_EPS)}

    def _u(self, x):
        a = self.alpha.clamp_min(_EPS)
        return a, (x / a).clamp(-1.0 if self.signed else 0.0, 1.0)

    def encode(self, x):
        self._require_init()
        _, u = self._u(x)
        return self._index(u).long()

    def decode(self, codes):
        self._require_init()
        a = self.alpha.clamp_min(_EPS)
        return a * self.table.to(a.device)[codes]

    def _surrogate(self, x):
        a, u = self._u(x)
        q = self.table.to(u.device)[self._index(u)]
        return a * (u + (q - u).detach())
