"""Approximation networks (boosted SSDD): one tiny residual MLP per non-identity view predicts that
view's representation coefficients from the unrotated ones, c_r ~= c_0 + W2 relu(W1 c_0 + b1) + b2
(V -> hidden -> V), so only the networks are stored instead of every view's coefficients."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class ViewNet(nn.Module):
    def __init__(self, dim: int, hidden: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return c + self.fc2(torch.relu(self.fc1(c)))


def n_params(dim: int, hidden: int = 4) -> int:
    return dim * hidden + hidden + hidden * dim + dim


def fit_view_net(c0: torch.Tensor, cr: torch.Tensor, hidden: int = 4, steps: int = 2000, lr: float = 1e-2,
                 seed: int = 0) -> tuple[ViewNet, float]:
    """Fit one network by full-batch Adam on MSE(net(c0), cr); returns it and its final relative error
    ||net(c0) - cr|| / ||cr||."""
    with _one_thread():
        return _fit(c0, cr, hidden, steps, lr, seed)


@contextmanager
def _one_thread():
    """Ops this small are dominated by thread synchronisation; on a busy machine one thread is ~20x faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _fit(c0, cr, hidden, steps, lr, seed):
    torch.manual_seed(seed)
    net = ViewNet(c0.shape[1], hidden)
    c0, cr = c0.detach(), cr.detach()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = (net(c0) - cr).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        rel = float((net(c0) - cr).norm() / cr.norm().clamp_min(1e-12))
    return net.eval(), rel


def zero_shift_error(c0: torch.Tensor, cr: torch.Tensor) -> float:
    """The baseline a view network has to beat: predict no shift at all (c_r ~= c_0, i.e. the
    residual branch outputs zero), as a relative error ||c_0 - c_r|| / ||c_r||."""
    c0, cr = c0.detach().float(), cr.detach().float()
    return float((c0 - cr).norm() / cr.norm().clamp_min(1e-12))


def view_net_state(net: ViewNet, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().clone() for k, v in net.state_dict().items()}


def view_net_from_state(tensors: dict[str, torch.Tensor], prefix: str) -> ViewNet:
    w1 = tensors[f"{prefix}.fc1.weight"]
    net = ViewNet(w1.shape[1], w1.shape[0])
    net.load_state_dict({k: tensors[f"{prefix}.{k}"] for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")})
    return net.eval()
