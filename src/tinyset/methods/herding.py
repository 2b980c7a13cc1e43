"""Herding (Welling 2009): greedily pick real images whose running mean of teacher features tracks
the class mean. Optimisation-free like ``random``, but coverage-aware."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Method, Unit, UnitResult, register_method, sample_class_indices


@dataclass
class HerdingConfig:
    pool: int = 1000  # candidates per class (all if the class is smaller)
    batch_size: int = 250


def _penultimate(teacher: nn.Module) -> nn.Module:
    """Features = the input of the last Linear layer, captured with a forward hook."""
    last = [m for m in teacher.modules() if isinstance(m, nn.Linear)][-1]
    return last


@register_method("herding", "herding on teacher features (greedy class-mean matching)")
class Herding(Method):
    Config = HerdingConfig
    selects_real = True
    needs_teacher = True

    @torch.no_grad()
    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:
        ds, teacher, dev = self.ctx.dataset, self.ctx.teacher, self.ctx.device
        feats: list[torch.Tensor] = []
        hook = _penultimate(teacher).register_forward_hook(lambda m, i, o: feats.append(i[0].flatten(1).float().cpu()))
        chosen_all = []
        try:
            for c in unit.classes:
                pool = sample_class_indices(ds, c, min(self.cfg.pool, len(ds.train.class_indices(c))), g)
                feats.clear()
                for chunk in pool.split(self.cfg.batch_size):
                    teacher(ds.train.get_batch(chunk)[0].to(dev))
                    self.ctx.counter.forward += len(chunk)
                f = torch.cat(feats)
                mu = f.mean(0)
                acc = torch.zeros_like(mu)
                picked: list[int] = []
                for k in range(unit.per_class):
                    dist = ((mu - (acc + f) / (k + 1)) ** 2).sum(1)
                    if picked:
                        dist[picked] = float("inf")
                    j = int(dist.argmin())
                    picked.append(j)
                    acc += f[j]
                chosen_all.append(pool[picked])
        finally:
            hook.remove()
        idx = torch.cat(chosen_all)
        return UnitResult(ds.train.get_batch(idx)[0], unit.labels(), {"source_indices": idx.tolist()})
