"""Uniform quantizer, 1-8 bits, with a learnable clip range.

Asymmetric (default, for [0, 1] pixels): levels ``lo + k * s``, ``s = (hi - lo) / (2**b - 1)``,
``k = 0 .. 2**b - 1``, both ends learnable.

Symmetric (``signed=True``, for normalised units), one learnable ``alpha``, two grids:

- ``grid="midtread"`` (default): the APoT paper's uniform Q^u(alpha, b) = alpha * {0, +-1/m, ...,
  +-1} with ``m = 2**(b-1) - 1``: ``2**b - 1`` levels including 0 (code ``n + m`` for level
  ``n/m``; code ``2**b - 1`` is unused, and the codes still take ``b`` bits each). It needs
  ``b >= 2``; at 1 bit the only symmetric grid is {-alpha, +alpha}, so 1 bit defaults to midrise.
- ``grid="midrise"``: ``2**b`` levels ``-alpha + k * s``, ``s = 2 * alpha / (2**b - 1)``, with no
  zero level (what tinyset's signed uniform grid was before the midtread grid; a stored signed
  config without ``grid`` is midrise).

Rounding ties (``ties``): ``away`` (default) breaks an exact half on |x|, away from zero (toward
``hi`` for x >= 0, toward ``lo`` below 0), so a symmetric grid is odd: q(-x) = -q(x). ``even`` is
``torch.round`` (half to even) on the grid's integer coordinate: the code index for the midrise
and asymmetric grids (tinyset's rule before ``ties`` existed, and what a stored config without
it means), the signed level index ``n`` for midtread (the APoT reference's uniform quantizer).

Gradient (LSQ-style straight-through), asymmetric and midrise: with ``u = (x - lo) / s`` and
``R = round(u)``, d/dx = 1 inside [lo, hi] and 0 outside; d/dlo = -(R - u)/L and d/dhi = (R - u)/L
inside, and outside the clipped end gets 1 (below: d/dlo = 1; above: d/dhi = 1).
Midtread (the APoT paper's RCF): with ``u = x / alpha``, d/dalpha = q(u) - u inside [-1, 1] and
sign(u) outside; d/dx = 1 inside, 0 outside (``ste="calibrated"``: 1 everywhere)."""
from __future__ import annotations

import torch

from ..errors import TinysetError
from .base import Quantizer, check_choice, per_group_reduce, register_quantizer, round_ties

_EPS = 1e-8
GRIDS = ("midtread", "midrise")
TIES = ("away", "even")


@register_quantizer(
    "uniform",
    "uniform grid, 1-8 bits, learnable clip (asymmetric lo/hi, or symmetric alpha: midtread Q^u with 0 or midrise), STE",
)
class UniformQuantizer(Quantizer):
    def __init__(self, bits: int, granularity: str = "tensor", signed: bool = False, grid: str | None = None,
                 ste: str = "clipped", ties: str = "away"):
        super().__init__(bits, granularity, signed, ste)
        self.ties = check_choice(ties, TIES, "uniform ties")
        if not self.signed:
            if grid is not None:
                raise TinysetError(f"uniform grid {grid!r} applies to signed quantizers; the unsigned grid is "
                                   "lo + k * (hi - lo) / (2**bits - 1)")
            self.grid = None
        else:
            self.grid = check_choice(grid or ("midtread" if self.bits >= 2 else "midrise"), GRIDS, "uniform grid")
            if self.grid == "midtread" and self.bits < 2:
                raise TinysetError("the midtread grid (2**bits - 1 levels including 0) needs at least 2 bits; "
                                   "1-bit signed uniform is midrise {-alpha, +alpha}")

    def config(self):
        cfg = {**super().config(), "ties": self.ties}
        if self.signed:
            cfg["grid"] = self.grid
        return cfg

    @classmethod
    def legacy_config(cls, config):
        old = {"ties": "even", **({"grid": "midrise"} if config.get("signed") else {})}
        return super().legacy_config({**old, **config})

    def param_names(self) -> list[str]:
        return ["alpha"] if self.signed else ["lo", "hi"]

    def _init_params(self, x):
        if self.signed:
            return {"alpha": per_group_reduce(x.abs(), self.granularity, lambda r: r.amax(dim=1)).clamp_min(_EPS)}
        lo = per_group_reduce(x, self.granularity, lambda r: r.amin(dim=1))
        hi = per_group_reduce(x, self.granularity, lambda r: r.amax(dim=1))
        return {"lo": lo, "hi": torch.maximum(hi, lo + _EPS)}

    @property
    def midtread(self) -> bool:
        return self.grid == "midtread"

    # -- midrise and asymmetric: levels lo + k * s, k = 0 .. L -------------------------------
    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.signed:
            a = self.alpha.clamp_min(_EPS)
            return -a, a
        return self.lo, torch.maximum(self.hi, self.lo + _EPS)

    @property
    def levels(self) -> int:
        """Steps of the midrise/asymmetric grid, ``2**bits - 1`` (its ``2**bits`` levels are 0..L)."""
        return (1 << self.bits) - 1

    def _scale(self, lo, hi):
        return (hi - lo) / self.levels

    # -- midtread: levels alpha * n / m, n = -m .. m -----------------------------------------
    @property
    def half_levels(self) -> int:
        """``m = 2**(bits-1) - 1``: the midtread grid's positive levels."""
        return (1 << (self.bits - 1)) - 1

    def _alpha(self):
        return self.alpha.clamp_min(_EPS)

    def _signed_index(self, x):
        """Midtread: (u, n) with u = clamp(x / alpha, -1, 1) and n the rounded level index in [-m, m]."""
        m = self.half_levels
        u = (x / self._alpha()).clamp(-1.0, 1.0)
        v = u.detach() * m
        return u, round_ties(v, v >= 0, self.ties)

    def encode(self, x):
        self._require_init()
        if self.midtread:
            _, n = self._signed_index(x)
            return n.long() + self.half_levels
        lo, hi = self._range()
        s = self._scale(lo, hi)
        return round_ties(((x - lo) / s).clamp(0, self.levels), x >= 0, self.ties).long()

    def decode(self, codes):
        self._require_init()
        if self.midtread:
            a = self._alpha()
            m = self.half_levels
            return a * ((codes - m).to(a.dtype) / m)
        lo, hi = self._range()
        return lo + codes.to(lo.dtype) * self._scale(lo, hi)

    def _surrogate(self, x):
        if self.midtread:
            a = self._alpha()
            u, n = self._signed_index(x)
            return a * (u + (n / self.half_levels - u).detach())
        lo, hi = self._range()
        s = self._scale(lo, hi)
        u = ((x - lo) / s).clamp(0, self.levels)
        return lo + s * (u + (round_ties(u.detach(), x.detach() >= 0, self.ties) - u).detach())
