"""RDED (Sun et al., 2024), optimisation-free: score random crops of real images by the teacher's
cross-entropy for the true class and keep the most representative (lowest-loss) ones. Large images
tile ``factor``^2 crops into one image; 32px data keeps single crops (factor 1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import augment as A
from ..errors import TinysetError
from .base import Method, Unit, UnitResult, register_method, sample_class_indices


@dataclass
class RDEDConfig:
    pool: int = 300  # real images drawn per class
    crops: int = 5  # random-resized crops scored per image
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (1.0, 1.0)  # square crops, as the reference (torchvision's default is 3/4-4/3)
    factor: int | None = None  # crops tiled per side; default 1 below 64px, else 2
    score_view: str = "pad"  # factor > 1: score a crop zero-padded (normalised units) to full size, as the reference | upsample
    resize: str = "grid"  # grid: one grid_sample over the image (edge samples may fall just outside the box) | box: torchvision's resized_crop, as the reference
    batch_size: int = 250


@register_method("rded", "RDED: keep the lowest-loss real crops, tiled factor x factor (no optimisation)")
class RDED(Method):
    Config = RDEDConfig
    selects_real = True
    needs_teacher = True

    def factor(self) -> int:
        if self.cfg.factor is not None:
            return int(self.cfg.factor)
        return 1 if self.ctx.dataset.info.image_size < 64 else 2

    @torch.no_grad()
    def _score_class(self, c: int, need: int, g: torch.Generator) -> torch.Tensor:
        """The ``need`` lowest-loss crops of class ``c``: each pool image keeps its best crop, then
        the best images win (one crop per source image keeps the set diverse)."""
        ds, info, dev = self.ctx.dataset, self.ctx.dataset.info, self.ctx.device
        f = self.factor()
        size = info.image_size // f
        pool = sample_class_indices(ds, c, max(need, min(self.cfg.pool, len(ds.train.class_indices(c)))), g)
        best_crops, best_loss = [], []
        for chunk in pool.split(max(1, self.cfg.batch_size // self.cfg.crops)):
            x, _ = ds.train.get_batch(chunk)
            n = len(chunk)
            xr = x.repeat(self.cfg.crops, 1, 1, 1)  # crop-major: row k*n + i is crop k of image i
            boxes = A.sample_rrc_boxes(len(xr), info.image_size, info.image_size, tuple(self.cfg.crop_scale),
                                       tuple(self.cfg.crop_ratio), generator=g)
            if self.cfg.resize == "box":
                crops = A.crop_resize_in_box(xr, boxes, size)
            elif self.cfg.resize == "grid":
                crops = A.crop_resize(xr, boxes, size)
            else:
                raise TinysetError(f"rded resize must be grid or box, not {self.cfg.resize!r}")
            view = self._score_view(crops) if f > 1 else crops
            logits = self.ctx.teacher(view.to(dev)).float().cpu()
            self.ctx.counter.forward += len(view)
            ce = F.cross_entropy(logits, torch.full((len(view),), c), reduction="none").view(self.cfg.crops, n)
            k = ce.argmin(0)
            best_loss.append(ce[k, torch.arange(n)])
            best_crops.append(crops.view(self.cfg.crops, n, *crops.shape[1:])[k, torch.arange(n)])
        loss, crops = torch.cat(best_loss), torch.cat(best_crops)
        return crops[loss.argsort()[:need]]

    def _score_view(self, crops: torch.Tensor) -> torch.Tensor:
        """What the teacher scores for a crop smaller than the image: the crop centred on a
        zero (dataset-mean) canvas, or upsampled to the full size."""
        full = self.ctx.dataset.info.image_size
        if self.cfg.score_view == "upsample":
            return F.interpolate(crops, size=full, mode="bilinear", align_corners=False)
        if self.cfg.score_view != "pad":
            raise TinysetError(f"rded score_view must be pad or upsample, not {self.cfg.score_view!r}")
        mean = torch.tensor(self.ctx.dataset.info.mean, dtype=crops.dtype).view(1, -1, 1, 1)
        s = crops.shape[-1]
        a = (full - s) // 2
        canvas = mean.expand(crops.shape[0], crops.shape[1], full, full).clone()
        canvas[:, :, a:a + s, a:a + s] = crops
        return canvas

    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:
        f = self.factor()
        out = []
        for c in unit.classes:
            crops = self._score_class(c, unit.per_class * f * f, g)
            if f > 1:  # tile f x f crops into each image
                n, ch, s, _ = crops.shape
                crops = crops.view(unit.per_class, f, f, ch, s, s).permute(0, 3, 1, 4, 2, 5).reshape(unit.per_class, ch, f * s, f * s)
            out.append(crops)
        return UnitResult(torch.cat(out), unit.labels(), {})
