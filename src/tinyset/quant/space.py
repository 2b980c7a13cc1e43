"""Where quantized values live relative to the data a student sees.

A quantizer may work on [0, 1] pixels directly or on normalised units (``(x - mean) / std``);
``DataSpace.to_data`` maps quantized values back to data. The in-loop forward pass and the artifact
decoder both call this one function, so what the loop optimised and what a student loads are the
same numbers bit for bit."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch


@dataclass
class DataSpace:
    mean: Sequence[float] | None = None  # per channel (dim 1); None = identity (values are data)
    std: Sequence[float] | None = None
    clamp: Sequence[float] | None = None  # (lo, hi) applied to the data, e.g. (0, 1) for pixels

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        m = torch.tensor(list(self.mean), dtype=x.dtype, device=x.device).view(shape)
        s = torch.tensor(list(self.std), dtype=x.dtype, device=x.device).view(shape)
        return m, s

    def to_data(self, v: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            m, s = self._stats(v)
            v = m + s * v
        if self.clamp is not None:
            v = v.clamp(float(self.clamp[0]), float(self.clamp[1]))
        return v

    def from_data(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        m, s = self._stats(x)
        return (x - m) / s

    def to_config(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(v) if v is not None else None) for k, v in d.items()}

    @classmethod
    def from_config(cls, d: dict[str, Any] | None) -> "DataSpace":
        return cls(**(d or {}))
