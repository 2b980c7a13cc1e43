"""Greedy diversity selection (AutoPalette's graph-cut initialisation, as an option of DM/QuADD).

From a pool of real samples of one class, already *quantized* (so the choice sees what will be
stored), pick ``k`` that maximise the graph-cut function
``f(S) = sum_{i in V, j in S} s_ij - lam * sum_{i, j in S} s_ij`` (cosine similarities of
features): representative of the pool, different from each other. Greedy gain of adding ``j``:
``sum_i s_ij - lam * (2 sum_{k in S} s_jk + s_jj)``, with the first term scaled by k/|V| so the
two terms are comparable whatever the pool size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def features(x: torch.Tensor, side: int = 8) -> torch.Tensor:
    """Unit-norm features of quantized samples: images average-pooled to ``side`` px, vectors as is."""
    if x.dim() == 4 and x.shape[-1] > side:
        x = F.adaptive_avg_pool2d(x, side)
    f = x.flatten(1).float()
    f = f - f.mean(dim=0, keepdim=True)
    return F.normalize(f, dim=1)


def graph_cut_select(feats: torch.Tensor, k: int, lam: float = 1.0) -> torch.Tensor:
    """Indices of ``k`` rows chosen greedily by the graph-cut gain (deterministic; ties -> lowest index)."""
    n = feats.shape[0]
    k = min(k, n)
    sim = feats @ feats.T
    cover = sim.sum(dim=0) * (k / n)
    penalty = torch.zeros(n, dtype=sim.dtype)
    chosen: list[int] = []
    taken = torch.zeros(n, dtype=torch.bool)
    for _ in range(k):
        gain = cover - lam * (2 * penalty + sim.diagonal())
        gain[taken] = float("-inf")
        j = int(torch.argmax(gain))
        chosen.append(j)
        taken[j] = True
        penalty += sim[:, j]
    return torch.tensor(chosen, dtype=torch.long)
