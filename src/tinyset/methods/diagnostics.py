"""Diagnostics of synthesised sets that need no model.

``template_score``: how much of the images' fine detail is one pattern shared by every image of a
class at fixed positions (the stripes E2D/SRe2L paint). Per image, the high-pass residual (image
minus a 3x3 box blur); per class, the energy of the mean residual over the mean energy of the
residuals. Independent images score about 1/n (n images per class); a shared template scores
near 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def high_pass(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = torch.full((c, 1, 3, 3), 1 / 9, dtype=x.dtype)
    return x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def template_score(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes with >= 2 images of ||mean residual||^2 / mean ||residual||^2."""
    r = high_pass(images.float())
    scores = []
    for c in labels.unique():
        rc = r[labels == c]
        if len(rc) < 2:
            continue
        scores.append(float(rc.mean(0).pow(2).sum() / rc.pow(2).sum((1, 2, 3)).mean().clamp_min(1e-12)))
    return sum(scores) / len(scores) if scores else float("nan")
