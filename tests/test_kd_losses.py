"""Golden values for the distillation losses, computed independently (math / float64 numpy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyset.errors import TinysetError
from tinyset.kd import (
    DEFAULT_ENERGY_DIRECTION,
    KD_LOSSES,
    build_kd_loss,
    energy,
    energy_thresholds,
)


def _np_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _np_ce(s: np.ndarray, y: np.ndarray) -> float:
    p = _np_softmax(s)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def _np_dkd(s: np.ndarray, t: np.ndarray, y: np.ndarray, alpha: float, beta: float, T: float) -> float:
    """mdistiller's DKD formula (probabilities, cat_mask, -1000 gt mask) in float64."""
    n, c = s.shape
    gt = np.zeros((n, c), dtype=bool)
    gt[np.arange(n), y] = True
    ps, pt = _np_softmax(s / T), _np_softmax(t / T)
    bs = np.stack([ps[gt], (ps * ~gt).sum(1)], 1)
    bt = np.stack([pt[gt], (pt * ~gt).sum(1)], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() / n * T**2
    ps2, pt2 = _np_softmax(s / T - 1000.0 * gt), _np_softmax(t / T - 1000.0 * gt)
    nckd = (pt2[~gt] * (np.log(pt2[~gt]) - np.log(ps2[~gt]))).sum() / n * T**2
    return alpha * tckd + beta * nckd


S = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
TT = [[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]]


def test_kd_matches_hand_formula_on_2x3():
    T = 2.0

    def softmax(v):
        ex = [math.exp(x / T) for x in v]
        return [x / sum(ex) for x in ex]

    kl = 0.0
    for s_row, t_row in zip(S, TT):
        ps, pt = softmax(s_row), softmax(t_row)
        kl += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
    expected = T * T * kl / 2
    got = build_kd_loss("kd", temperature=T)(torch.tensor(S), torch.tensor(TT), None)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # with a CE term: + ce_weight * CE(student, labels)
    y = [2, 0]
    ce = -sum(math.log(math.exp(r[k]) / sum(math.exp(x) for x in r)) for r, k in zip(S, y)) / 2
    loss = build_kd_loss("kd", temperature=T, kd_weight=0.5, ce_weight=0.3)
    got = loss(torch.tensor(S), torch.tensor(TT), torch.tensor(y))
    assert got.item() == pytest.approx(0.5 * expected + 0.3 * ce, rel=1e-6)


def test_mse_ce_is_edc_form():
    s, t, y = np.array(S), np.array(TT), np.array([2, 0])
    loss = build_kd_loss("mse_ce")
    got = loss(torch.tensor(S), torch.tensor(TT), torch.tensor(y))
    assert got.item() == pytest.approx(((s - t) ** 2).mean() + 0.025 * _np_ce(s, y), rel=1e-6)
    assert loss(torch.tensor(S), torch.tensor(TT), None).item() == pytest.approx(((s - t) ** 2).mean(), rel=1e-6)


def test_ce_needs_labels_only():
    loss = build_kd_loss("ce")
    assert not loss.needs_teacher and loss.needs_targets
    got = loss(torch.tensor(S), None, torch.tensor([2, 0]))
    assert got.item() == pytest.approx(_np_ce(np.array(S), np.array([2, 0])), rel=1e-6)
    with pytest.raises(TinysetError):
        loss(torch.tensor(S), None, None)
    with pytest.raises(TinysetError):
        build_kd_loss("kd")(torch.tensor(S), None, None)


def test_dkd_golden_value_and_warmup():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 5)) * 3, rng.normal(size=(4, 5)) * 3
    y = np.array([0, 3, 1, 4])
    kd = _np_dkd(s, t, y, alpha=1.0, beta=8.0, T=4.0)
    ce = _np_ce(s, y)
    loss = build_kd_loss("dkd")
    args = (torch.tensor(s), torch.tensor(t), torch.tensor(y))
    assert loss.needs_targets
    assert loss(*args).item() == pytest.approx(ce + kd, rel=1e-9)  # no set_progress: full weight
    loss.set_progress(4, 100)  # 0-based epoch 4 -> factor 5/20 (mdistiller epoch 5)
    assert loss(*args).item() == pytest.approx(ce + 0.25 * kd, rel=1e-9)
    loss.set_progress(19, 100)
    assert loss(*args).item() == pytest.approx(ce + kd, rel=1e-9)
    loss.set_progress(60, 100)
    assert loss(*args).item() == pytest.approx(ce + kd, rel=1e-9)
    other = build_kd_loss("dkd", alpha=0.5, beta=2.0, temperature=2.0, ce_weight=0.0)
    assert other(*args).item() == pytest.approx(_np_dkd(s, t, y, 0.5, 2.0, 2.0), rel=1e-9)
    with pytest.raises(TinysetError):
        loss(torch.tensor(s), torch.tensor(t), None)


def test_mdistiller_style_dkd_is_not_finite_on_huge_logits_but_ours_is():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10) * 1e4, torch.randn(8, 10) * 1e4
    y = torch.randint(0, 10, (8,))
    gt = F.one_hot(y, 10).bool()
    ps = F.softmax(s / 4, 1)
    naive = torch.log(torch.stack([ps[gt], (ps * ~gt).sum(1)], 1))
    pt = F.softmax(t / 4, 1)
    bt = torch.stack([pt[gt], (pt * ~gt).sum(1)], 1)
    assert not torch.isfinite(F.kl_div(naive, bt, reduction="sum"))
    assert torch.isfinite(build_kd_loss("dkd")(s, t, y))


@pytest.mark.parametrize("name", KD_LOSSES.names())
def test_every_loss_finite_with_huge_logits(name):
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(16, 10, generator=g) * 1e4).requires_grad_()
    t = torch.randn(16, 10, generator=g) * 1e4
    y = torch.randint(0, 10, (16,), generator=g)
    loss = build_kd_loss(name)
    if loss.needs_energy_thresholds:
        loss.set_energy_thresholds(*energy_thresholds(energy(t)))
    loss.set_progress(10, 100)
    value = loss(s, t if loss.needs_teacher else None, y)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_energy_kd_with_equal_temperatures_is_kd():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(12, 7, generator=g) * 3, torch.randn(12, 7, generator=g) * 3
    y = torch.randint(0, 7, (12,), generator=g)
    ekd = build_kd_loss("energy_kd", temperatures=(3.0, 3.0, 3.0), thresholds=energy_thresholds(energy(t)))
    kd = build_kd_loss("kd", temperature=3.0, kd_weight=0.9, ce_weight=0.1)
    assert ekd(s, t, y).item() == pytest.approx(kd(s, t, y).item(), rel=1e-6)
    assert ekd(s, t, None).item() == pytest.approx(kd(s, t, None).item(), rel=1e-6)
    edkd = build_kd_loss("energy_dkd", temperatures=(3.0, 3.0, 3.0), thresholds=(-1.0, 1.0))
    dkd = build_kd_loss("dkd", temperature=3.0)
    assert edkd(s, t, y).item() == pytest.approx(dkd(s, t, y).item(), rel=1e-6)


def test_energy_direction_paper_vs_reverse():
    # confident (energy ~ -20.1), in between (~ -7.0), flat (-4 log 4 ~ -5.5)
    t = torch.tensor([[20.0, 0, 0, 0], [4.0, 0, 0, 0], [0.0, 0, 0, 0]])
    thresholds = (-10.0, -6.0)
    temps = {}
    for name in ("energy_kd_paper", "energy_kd_reverse", "energy_kd", "energy_dkd"):
        loss = build_kd_loss(name, thresholds=thresholds)
        temps[name] = loss.sample_temperatures(t).tolist()
    assert temps["energy_kd_reverse"] == [2.0, 4.0, 6.0]  # released code
    assert temps["energy_kd_paper"] == [6.0, 4.0, 2.0]  # paper's text
    assert DEFAULT_ENERGY_DIRECTION == "reverse"
    assert temps["energy_kd"] == temps["energy_dkd"] == temps["energy_kd_reverse"]
    paper = build_kd_loss("energy_kd", direction="paper", thresholds=thresholds)
    assert paper.sample_temperatures(t).tolist() == [6.0, 4.0, 2.0]
    custom = build_kd_loss("energy_kd_paper", temperatures=(1.0, 2.0, 3.0), thresholds=thresholds)
    assert custom.sample_temperatures(t).tolist() == [1.0, 2.0, 3.0]


def test_energy_kd_without_thresholds_is_a_one_line_error():
    loss = build_kd_loss("energy_kd")
    assert loss.needs_energy_thresholds
    with pytest.raises(TinysetError, match="set_energy_thresholds") as info:
        loss(torch.randn(2, 3), torch.randn(2, 3), None)
    assert "\n" not in str(info.value)
    with pytest.raises(TinysetError, match="direction"):
        build_kd_loss("energy_kd", direction="sideways")


def test_registry_errors_list_known_names():
    with pytest.raises(TinysetError) as info:
        build_kd_loss("nope")
    msg = str(info.value)
    for name in ("ce", "dkd", "energy_kd", "energy_kd_paper", "kd", "mse_ce"):
        assert name in msg
    with pytest.raises(TinysetError, match="temprature"):
        build_kd_loss("kd", temprature=4.0)
    with pytest.raises(TinysetError):
        build_kd_loss("energy_kd_paper", direction="reverse")
