"""Kernel ridge regression with a linear kernel on network features: the inner solve of KRR-ST.

Given support features h_s [m, p] with targets Y_s [m, d] and query features h_t [n, p], each with
a constant column appended (a bias in feature space), predict
    K_ts (K_ss + lam I)^-1 Y_s,   K_ss = h_s h_s^T,  K_ts = h_t h_s^T,  lam = reg * tr(K_ss).
``lam`` is computed on detached values (a scale, not something to optimise through)."""
from __future__ import annotations

import torch


def with_bias(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([h.flatten(1), torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], 1)


def krr_predict(h_t: torch.Tensor, h_s: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6,
                lam: float | None = None) -> torch.Tensor:
    """``lam`` fixes the ridge directly (tests); by default it is ``reg * tr(K_ss)``."""
    h_t, h_s = with_bias(h_t), with_bias(h_s)
    k_ss = h_s @ h_s.T
    k_ts = h_t @ h_s.T
    if lam is None:
        lam = reg * torch.trace(k_ss).detach()
    eye = torch.eye(k_ss.shape[0], dtype=k_ss.dtype, device=k_ss.device)
    return k_ts @ torch.linalg.solve(k_ss + lam * eye, y_s)
