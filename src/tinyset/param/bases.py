"""Parameterised synthetic pairs (boosted SSDD): images = upsample(coeff @ image_bases) at low
resolution, representations = coeff @ repr_bases, one set of representation coefficients per
predefined view. Bases start from PCA (or random orthonormal directions, the ablation); coefficients
start from projecting the chosen real images and their teacher features."""
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

    def __init__(self, image_coeff, image_bases, repr_coeff, repr_bases, low_shape: tuple[int, int, int], size: int):
        super().__init__()
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
        return decode_images(self.image_coeff, self.image_bases, self.low_shape, self.size)

    def targets(self) -> torch.Tensor:
        """[R, m, d]"""
        return self.repr_coeff @ self.repr_bases


def decode_images(coeff: torch.Tensor, bases: torch.Tensor, low_shape, size: int) -> torch.Tensor:
    low = (coeff @ bases).view(coeff.shape[0], *low_shape)
    if low.shape[-1] == size:
        return low
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def downsample(x: torch.Tensor, low: int) -> torch.Tensor:
    return x if x.shape[-1] == low else F.interpolate(x, size=(low, low), mode="area")
