"""Barlow Twins (Zbontar et al., 2021): two augmented views through encoder + projector MLP, batch
norm of the embeddings, and a cross-correlation matrix pushed to the identity
(on-diagonal (1 - c_ii)^2 + lambda * off-diagonal c_ij^2, lambda ~ 5e-3)."""
from __future__ import annotations

import torch
from torch import nn

from ..data import augment as A
from .registry import register_ssl


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    n = z1.shape[0]
    bn = lambda z: (z - z.mean(0)) / z.std(0, unbiased=False).clamp_min(1e-5)  # BN without affine
    c = bn(z1).T @ bn(z2) / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return on + lambd * off


def ssl_views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One SimCLR-style view per image, batched: random-resized crop + flip, brightness/contrast
    jitter (p 0.8) and grayscale (p 0.2). Every random choice comes from ``g`` (resumable)."""
    n = x.shape[0]
    v = A.random_resized_crop(x, scale=(0.2, 1.0), flip=True, generator=g)
    jit = (torch.rand(n, 1, 1, 1, generator=g) < 0.8).to(x)
    b = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 0.8 - 0.4) * jit
    c = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 0.8 - 0.4) * jit
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = ((v * b - mean) * c + mean).clamp(0, 1)
    if v.shape[1] == 3:
        gray = (torch.rand(n, 1, 1, 1, generator=g) < 0.2).to(x)
        lum = (0.299 * v[:, :1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:]).expand_as(v)
        v = gray * lum + (1 - gray) * v
    return v


@register_ssl("barlow_twins", "Barlow Twins: cross-correlation of two views' embeddings to the identity (lambda 5e-3)")
class BarlowTwins(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, proj_dim: int = 1024, lambd: float = 5e-3):
        super().__init__()
        self.encoder = encoder
        self.lambd = lambd
        self.projector = nn.Sequential(
            nn.Linear(feat_dim, proj_dim, bias=False), nn.BatchNorm1d(proj_dim), nn.ReLU(inplace=True),
            nn.Linear(proj_dim, proj_dim, bias=False), nn.BatchNorm1d(proj_dim), nn.ReLU(inplace=True),
            nn.Linear(proj_dim, proj_dim, bias=False),
        )

    def forward(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        z1 = self.projector(self.encoder(ssl_views(x, g)))
        z2 = self.projector(self.encoder(ssl_views(x, g)))
        return barlow_twins_loss(z1, z2, self.lambd)
