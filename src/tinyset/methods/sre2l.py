"""SRe2L (Yin et al., 2023): recover images from Gaussian noise by inverting the teacher with
BN-statistics matching; one crop box for the whole batch plus a random shift (jitter)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, Unit, UnitResult, register_method
from .bn_matching import cached_class_statistics
from .recovery import RecoveryConfig, SharedCropPolicy, recover, unit_shape


@dataclass
class SRe2LConfig(RecoveryConfig):
    iterations: int = 1000
    lr: float = 0.25
    r_bn: float = 0.01
    jitter: int | None = None  # pixels; default image_size // 8 (32 at 224px as the reference, 4 at 32px)


def noise_init(n: int, info, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise in the normalised space (as SRe2L), mapped back to pixels and clamped."""
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    z = torch.randn((n, *info.shape), generator=g)
    return (z * std + mean).clamp(0, 1)


class RecoveryMethod(Method):
    """Common plumbing of recovery-based methods: unit shape and class statistics."""

    needs_teacher = True
    classes_per_unit = None

    def unit_classes(self, num_classes: int) -> int:
        return unit_shape(num_classes, self.cfg.batch_size, 1)[0]

    def unit_slots(self, ipc: int) -> int:
        return unit_shape(self.ctx.dataset.info.num_classes, self.cfg.batch_size, ipc)[1]

    def class_targets(self):
        if not self.cfg.class_stats:
            return None, 0.0
        if not hasattr(self, "_targets"):
            self._targets = cached_class_statistics(
                self.ctx.teacher, self.ctx.dataset, self.ctx.device, self.ctx.cache_dir, self.ctx.progress
            )
            self._stats_reported = False
        stats, secs = self._targets
        # the one-off cost is charged once, to the first unit
        charged = 0.0 if self._stats_reported else secs
        self._stats_reported = True
        return stats, charged


@register_method("sre2l", "SRe2L: noise start, BN matching, shared crop + jitter (1,000+ iterations)")
class SRe2L(RecoveryMethod):
    Config = SRe2LConfig

    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:
        info = self.ctx.dataset.info
        labels = unit.labels()
        x0 = noise_init(len(labels), info, g)
        jitter = self.cfg.jitter if self.cfg.jitter is not None else max(1, info.image_size // 8)
        policy = SharedCropPolicy(tuple(self.cfg.crop_scale), jitter, self.cfg.flip)
        targets, stats_secs = self.class_targets()
        x, stats = recover(x0, labels, self.cfg, policy, self.ctx, g, targets, desc=f"sre2l {unit.key}")
        stats["class_stats_seconds"] = stats_secs
        return UnitResult(x, labels, stats)
