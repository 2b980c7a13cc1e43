"""Batched, differentiable augmentations on NCHW tensors.

One ``grid_sample`` does crop + resize + flip for a whole batch with a box per sample, so the same
code serves student training (no gradient) and pixel optimisation (gradient into the pixels)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_rrc_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop box sampling, vectorised: ``n`` boxes (x0, y0, w, h) in pixels.

    Each row takes the first of ``tries`` candidates that fits; rows with none fall back to the
    centre crop clamped to ``ratio`` (as torchvision does)."""
    area = height * width
    s = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator) * area
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(s * r))
    h = torch.round(torch.sqrt(s / r))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    u = torch.rand(n, 2, generator=generator)
    boxes = torch.empty(n, 4)
    have = first >= 0
    rows = torch.arange(n)
    wf = w[rows, first.clamp_min(0)]
    hf = h[rows, first.clamp_min(0)]
    # fallback: whole image, clamped to the ratio range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    wf = torch.where(have, wf, torch.full_like(wf, fw))
    hf = torch.where(have, hf, torch.full_like(hf, fh))
    x0 = torch.floor(u[:, 0] * (width - wf + 1))
    y0 = torch.floor(u[:, 1] * (height - hf + 1))
    x0 = torch.where(have, x0, torch.full_like(x0, (width - fw) // 2))
    y0 = torch.where(have, y0, torch.full_like(y0, (height - fh) // 2))
    boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3] = x0, y0, wf, hf
    return boxes


def crop_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out_size: int | tuple[int, int] | None = None,
    flips: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop each image to its box (x0, y0, w, h in pixels), resize bilinearly to ``out_size`` and
    optionally flip horizontally, in one differentiable ``grid_sample``."""
    n, _, h, w = images.shape
    if out_size is None:
        out_size = (h, w)
    elif isinstance(out_size, int):
        out_size = (out_size, out_size)
    boxes = boxes.to(images.device, torch.float32)
    x0, y0, bw, bh = boxes.unbind(1)
    sx = bw / w
    sy = bh / h
    cx = (2 * x0 + bw) / w - 1
    cy = (2 * y0 + bh) / h - 1
    if flips is not None:
        sx = torch.where(flips.to(images.device), -sx, sx)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = sy, cy
    grid = F.affine_grid(theta, [n, images.shape[1], *out_size], align_corners=False)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def crop_resize_in_box(images: torch.Tensor, boxes: torch.Tensor, out_size: int | tuple[int, int]) -> torch.Tensor:
    """torchvision's ``resized_crop``: cut each box out, then resize it bilinearly (antialiased), so
    samples near the box edge are clamped to the box. ``crop_resize`` samples the whole image there
    (border padding only at the image edge); the two differ only along the crop's edge. No gradient
    path (a loop over boxes): for selection, not pixel optimisation."""
    size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    out = []
    for img, (x0, y0, w, h) in zip(images, boxes.round().long().tolist()):
        out.append(F.interpolate(img[None, :, y0:y0 + h, x0:x0 + w], size=size, mode="bilinear", align_corners=False,
                                 antialias=True))
    return torch.cat(out) if out else images.new_zeros(0, images.shape[1], *size)


def random_resized_crop(
    images: torch.Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    n, _, h, w = images.shape
    boxes = sample_rrc_boxes(n, h, w, scale=scale, generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    return crop_resize(images, boxes, (h, w), flips)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image flipped horizontally with probability 1/2."""
    flips = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)


def random_shift_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None = None,
                      flip: bool = True) -> torch.Tensor:
    """The classic CIFAR augmentation: zero-pad by ``pad``, random crop back, random flip."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros_like(flips)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)
    cols = dx.view(n, 1) + torch.arange(w).view(1, w)
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols).to(images.device)
    bidx = torch.arange(n, device=images.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[bidx, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """The CutMix box for mixing ratio ``lam`` (fraction kept from the original): y0, y1, x0, x1."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    return y0, y1, x0, x1


def cutmix(
    images: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix inside a batch: paste a box from a permuted partner. Returns (mixed, perm, lam), where
    lam is the area fraction kept from the original image (exact, after clipping the box)."""
    n, _, h, w = images.shape
    lam = _beta(alpha, generator)
    perm = torch.randperm(n, generator=generator).to(images.device)
    y0, y1, x0, x1 = cutmix_box(h, w, lam, generator)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, perm, lam


def mixup(
    images: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    n = images.shape[0]
    lam = float(_beta(alpha, generator))
    perm = torch.randperm(n, generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[perm], perm, lam


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """Beta(alpha, alpha) from a seeded generator (torch.distributions cannot take one): alpha 1 is
    uniform; otherwise a numpy Beta draw seeded from ``generator``, so mixup with any alpha is
    reproducible (an unseeded gamma draw was not)."""
    if alpha == 1.0:
        return float(torch.rand(1, generator=generator))
    import numpy as np

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(float(alpha), float(alpha)))
