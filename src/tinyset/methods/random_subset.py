"""The optimisation-free floor: a random real subset, ``ipc`` images per class."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, Unit, UnitResult, register_method, sample_class_indices


@dataclass
class RandomConfig:
    pass


@register_method("random", "random real subset (the floor every method is compared with)")
class RandomSubset(Method):
    Config = RandomConfig
    selects_real = True

    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:
        idx = torch.cat([sample_class_indices(self.ctx.dataset, c, unit.per_class, g) for c in unit.classes])
        x, _ = self.ctx.dataset.train.get_batch(idx)
        return UnitResult(x, unit.labels(), {"source_indices": idx.tolist()})
