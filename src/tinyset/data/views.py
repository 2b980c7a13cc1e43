"""The predefined views: exact rotations by quarter turns (0/90/180/270 degrees). Exact means a
pixel permutation (``torch.rot90``), so a view and its inverse lose nothing."""
from __future__ import annotations

import torch

QUARTER_TURNS = (0, 1, 2, 3)


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate NCHW images by ``k`` quarter turns counter-clockwise."""
    k = int(k) % 4
    return x if k == 0 else torch.rot90(x, k, dims=(-2, -1))


def unrotate(x: torch.Tensor, k: int) -> torch.Tensor:
    return rotate(x, -int(k))


def all_views(x: torch.Tensor, views: tuple[int, ...]) -> torch.Tensor:
    """[len(views) * N, C, H, W]: view-major, so view v of image i sits at v * N + i."""
    return torch.cat([rotate(x, k) for k in views])
