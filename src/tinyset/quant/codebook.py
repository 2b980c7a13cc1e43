"""Learned codebook: 2**bits free levels per group (set, channel or image), initialised from the
data's quantiles and learned by gradient; every level is stored (float32) and counted.

Each element maps to its nearest level (the levels are kept sorted; midpoints decide). Gradients:
to the levels, exact (the sum of the upstream gradient over the elements that chose each level);
to the data, straight-through inside [min level, max level], 0 outside (``ste="calibrated"``: 1
everywhere)."""
from __future__ import annotations

import torch

from .base import Quantizer, num_groups, register_quantizer

_MAX_QUANTILE_SAMPLES = 1 << 20


@register_quantizer("codebook", "learned non-uniform levels (2**bits per set/channel/image) from quantiles, learned by gradient")
class CodebookQuantizer(Quantizer):
    def param_names(self):
        return ["levels"]

    def params_per_group(self) -> int:
        return 1 << self.bits

    def state_shapes(self, data_shape):
        return {"levels": (num_groups(data_shape, self.granularity), 1 << self.bits)}

    # rows [G, M] <-> data shape
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if self.granularity == "tensor":
            return x.reshape(1, -1)
        if self.granularity == "channel":
            return x.transpose(0, 1).reshape(x.shape[1], -1)
        return x.reshape(x.shape[0], -1)

    def _unrows(self, r: torch.Tensor, shape) -> torch.Tensor:
        if self.granularity == "channel":
            moved = (shape[1], shape[0]) + tuple(shape[2:])
            return r.reshape(moved).transpose(0, 1)
        return r.reshape(shape)

    def _init_params(self, x):
        rows = self._rows(x)
        if rows.shape[1] > _MAX_QUANTILE_SAMPLES:  # torch.quantile's input limit; an even subsample
            rows = rows[:, torch.linspace(0, rows.shape[1] - 1, _MAX_QUANTILE_SAMPLES).long()]
        k = 1 << self.bits
        q = (torch.arange(k, dtype=torch.float32) + 0.5) / k
        return {"levels": torch.quantile(rows, q.to(rows.device), dim=1).T.contiguous()}  # [G, K]

    def _sorted(self):
        return torch.sort(self.levels, dim=1).values

    def _codes(self, rows, lev):
        mids = ((lev[:, 1:] + lev[:, :-1]) / 2).detach().contiguous()
        return torch.searchsorted(mids, rows.detach().contiguous())

    def encode(self, x):
        self._require_init()
        lev = self._sorted()
        return self._unrows(self._codes(self._rows(x), lev), x.shape).long()

    def decode(self, codes):
        self._require_init()
        lev = self._sorted()
        return self._unrows(lev.gather(1, self._rows(codes)), codes.shape)

    def _surrogate(self, x):
        lev = self._sorted()
        rows = self._rows(x)
        q = lev.gather(1, self._codes(rows, lev))
        inside = (rows >= lev[:, :1]) & (rows <= lev[:, -1:])
        return self._unrows(q + (rows - rows.detach()) * inside, x.shape)

    def state(self):
        # stored sorted, so the decoder's levels are the forward pass's levels in the same order
        self._require_init()
        return {"levels": self._sorted().detach().float().cpu().contiguous()}
