"""Uniform quantizer, 1-8 bits, with a learnable clip range.

Asymmetric (default, for [0, 1] pixels): levels ``lo + k * s``, ``s = (hi - lo) / (2**b - 1)``,
both ends learnable. Symmetric (``signed=True``, for normalised units): the same grid on
``[-alpha, alpha]`` with one learnable ``alpha``.

Gradient (LSQ-style straight-through): with ``u = (x - lo) / s`` and ``R = round(u)``,
d/dx = 1 inside [lo, hi] and 0 outside; d/dlo = -(R - u)/L and d/dhi = (R - u)/L inside,
and outside the clipped end gets 1 (below: d/dlo = 1; above: d/dhi = 1)."""
from __future__ import annotations

import torch

from .base import Quantizer, per_group_reduce, register_quantizer

_EPS = 1e-8


@register_quantizer("uniform", "uniform grid, 1-8 bits, learnable clip (asymmetric lo/hi or symmetric alpha), STE")
class UniformQuantizer(Quantizer):
    def param_names(self) -> list[str]:
        return ["alpha"] if self.signed else ["lo", "hi"]

    def _init_params(self, x):
        if self.signed:
            return {"alpha": per_group_reduce(x.abs(), self.granularity, lambda r: r.amax(dim=1)).clamp_min(_EPS)}
        lo = per_group_reduce(x, self.granularity, lambda r: r.amin(dim=1))
        hi = per_group_reduce(x, self.granularity, lambda r: r.amax(dim=1))
        return {"lo": lo, "hi": torch.maximum(hi, lo + _EPS)}

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.signed:
            a = self.alpha.clamp_min(_EPS)
            return -a, a
        return self.lo, torch.maximum(self.hi, self.lo + _EPS)

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    def _scale(self, lo, hi):
        return (hi - lo) / self.levels

    def encode(self, x):
        self._require_init()
        lo, hi = self._range()
        s = self._scale(lo, hi)
        return torch.round(((x - lo) / s).clamp(0, self.levels)).long()

    def decode(self, codes):
        self._require_init()
        lo, hi = self._range()
        return lo + codes.to(lo.dtype) * self._scale(lo, hi)

    def _surrogate(self, x):
        lo, hi = self._range()
        s = self._scale(lo, hi)
        u = ((x - lo) / s).clamp(0, self.levels)
        return lo + s * (u + (torch.round(u) - u).detach())
