"""Parameterised synthetic pairs (boosted SSDD): images = upsample(coeff @ image_bases) at low
resolution, representations = coeff @ repr_bases, one set of representation coefficients per
predefined view. Bases start from PCA (or random orthonormal directions, the ablation); coefficients
start from projecting the chosen real images and their teacher features. ``PixelViewsParam`` is the
same interface without bases (full-resolution pixels, raw targets per view: KRR-ST with views).

``clamp``: when set, the images are clamped to [0, 1] in the forward pass (what the pool networks and
the KRR loss see); the ``bases`` decoder applies the same clamp, so a stored set decodes to exactly
the pixels that were optimised. Off by default (the reference never clamps)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TinysetError


def pca_bases(x: torch.Tensor, n: int) -> torch.Tensor:
    """[n, D] top right-singular vectors of the *uncentred* rows of ``x`` [N, D]; uncentred so the
    first basis carries the mean and no separate mean vector has to be stored."""
    x = x.flatten(1).double()
    if n > min(x.shape):
        raise TinysetError(f"asked for {n} PCA bases from {x.shape[0]} samples of dimension {x.shape[1]}; use at most {min(x.shape)}")
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:n].float()


def random_bases(n: int, dim: int, g: torch.Generator) -> torch.Tensor:
    """[n, dim] random unit directions, orthonormal when n <= dim (the 'no PCA' ablation)."""
    a = torch.randn(dim, n, generator=g, dtype=torch.float64)
    if n <= dim:
        return torch.linalg.qr(a).Q.T.float().contiguous()
    return (a / a.norm(dim=0, keepdim=True)).T.float().contiguous()


def project(x: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients c with c @ bases ~= x (exact projection for orthonormal bases)."""
    return torch.linalg.lstsq(bases.T.double(), x.flatten(1).T.double()).solution.T.float()


class BasesParam(nn.Module):
    """Learnable image and representation coefficients/bases for ``m`` images and ``views`` views."""

    def __init__(self, image_coeff, image_bases, repr_coeff, repr_bases, low_shape: tuple[int, int, int], size: int,
                 clamp: bool = False):
        super().__init__()
        self.clamp = bool(clamp)
        self.image_coeff = nn.Parameter(image_coeff.clone())  # [m, U]
        self.image_bases = nn.Parameter(image_bases.clone())  # [U, C*h*w]
        self.repr_coeff = nn.Parameter(repr_coeff.clone())  # [R, m, V]
        self.repr_bases = nn.Parameter(repr_bases.clone())  # [V, d]
        self.low_shape = tuple(low_shape)
        self.size = int(size)

    @property
    def m(self) -> int:
        return self.image_coeff.shape[0]

    def images(self) -> torch.Tensor:
        x = decode_images(self.image_coeff, self.image_bases, self.low_shape, self.size)
        return x.clamp(0, 1) if self.clamp else x

    def targets(self) -> torch.Tensor:
        """[R, m, d]"""
        return self.repr_coeff @ self.repr_bases

    def groups(self, image_lr: float, target_lr: float) -> list[dict]:
        return [{"params": [self.image_coeff, self.image_bases], "lr": image_lr},
                {"params": [self.repr_coeff, self.repr_bases], "lr": target_lr}]

    def stored(self, approx: bool) -> dict[str, torch.Tensor]:
        """The components a ``bases`` artifact keeps (view networks added by the caller)."""
        t = {k: getattr(self, k).detach().cpu().clone() for k in ("image_coeff", "image_bases", "repr_bases")}
        rc = self.repr_coeff.detach().cpu()
        t["repr_coeff"] = rc[:1].clone() if approx else rc.clone()
        return t

    def coefficients(self) -> torch.Tensor:
        """[R, m, V] what the view networks map (view 0 -> view r)."""
        return self.repr_coeff


class PixelViewsParam(nn.Module):
    """No bases: learnable pixels [m, C, H, W] and raw targets [R, m, d], one per view (the
    ``pixels_views`` ablation: KRR-ST with the predefined views)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, clamp: bool = False):
        super().__init__()
        self.pixels = nn.Parameter(images.clone())
        self.raw_targets = nn.Parameter(targets.clone())
        self.clamp = bool(clamp)

    @property
    def m(self) -> int:
        return self.pixels.shape[0]

    def images(self) -> torch.Tensor:
        return self.pixels.clamp(0, 1) if self.clamp else self.pixels

    def targets(self) -> torch.Tensor:
        return self.raw_targets

    def groups(self, image_lr: float, target_lr: float) -> list[dict]:
        return [{"params": [self.pixels], "lr": image_lr}, {"params": [self.raw_targets], "lr": target_lr}]

    def stored(self, approx: bool) -> dict[str, torch.Tensor]:
        rt = self.raw_targets.detach().cpu()
        return {"images": self.pixels.detach().cpu().clone(), "targets": rt[:1].clone() if approx else rt.clone()}

    def coefficients(self) -> torch.Tensor:
        return self.raw_targets


def decode_images(coeff: torch.Tensor, bases: torch.Tensor, low_shape, size: int) -> torch.Tensor:
    low = (coeff @ bases).view(coeff.shape[0], *low_shape)
    if low.shape[-1] == size:
        return low
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def downsample(x: torch.Tensor, low: int) -> torch.Tensor:
    return x if x.shape[-1] == low else F.interpolate(x, size=(low, low), mode="area")
