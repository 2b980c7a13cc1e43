"""Quantizers: hand-computed STE/RCF gradients, gradchecks in float64, APoT level sets, exact
encode/decode round trips, exact byte costs."""
import itertools
import math

import pytest
import torch
from torch.func import functional_call

from tinyset.errors import TinysetError
from tinyset.quant import apot_levels, build_quantizer, pack_bits, packed_nbytes, unpack_bits


def _q(name, bits, gran, x, **state):
    q = build_quantizer(name, bits, gran).init_from(x)
    if state:
        q.load_state({k: torch.as_tensor(v, dtype=torch.float32).reshape(getattr(q, k).shape) for k, v in state.items()}, x.shape)
    return q


def _grads(q, x):
    x = x.clone().requires_grad_(True)
    out = q(x)
    out.sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in q.named_parameters()}


def test_uniform_asymmetric_ste_hand_values():
    # one clip range per element (granularity "image" on [4, 1]); 2 bits on [0, 1]: L = 3, s = 1/3
    x = torch.tensor([[0.45], [-0.2], [1.3], [0.1]])
    q = _q("uniform", 2, "image", x, lo=[0.0] * 4, hi=[1.0] * 4)
    out, gx, gp = _grads(q, x)
    assert torch.allclose(out.flatten(), torch.tensor([1 / 3, 0.0, 1.0, 0.0]))
    assert gx.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]  # straight through inside the clip only
    # inside: d/dlo = -(R - u)/L, d/dhi = (R - u)/L with u = x/s; below: d/dlo = 1; above: d/dhi = 1
    assert torch.allclose(gp["lo"].flatten(), torch.tensor([0.35 / 3, 1.0, 0.0, 0.3 / 3]), atol=1e-6)
    assert torch.allclose(gp["hi"].flatten(), torch.tensor([-0.35 / 3, 0.0, 1.0, -0.3 / 3]), atol=1e-6)


def test_uniform_symmetric_midrise_ste_hand_values():
    # the midrise grid (no zero level; see test_quant_conventions.py for the default midtread grid)
    # alpha = 1, 2 bits on [-1, 1]: s = 2/3; x = 0.2 -> u = 1.8, R = 2, value 1/3
    x = torch.tensor([[0.2], [1.5], [-3.0]])
    q = build_quantizer("uniform", 2, "image", signed=True, grid="midrise").init_from(x)
    q.load_state({"alpha": torch.ones(3, 1)}, x.shape)
    out, gx, gp = _grads(q, x)
    assert torch.allclose(out.flatten(), torch.tensor([1 / 3, 1.0, -1.0]))
    assert gx.flatten().tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(gp["alpha"].flatten(), torch.tensor([2 * 0.2 / 3, 1.0, -1.0]), atol=1e-6)


def test_apot_rcf_hand_values():
    # signed 3 bits {0, +-1/4, +-1/2, +-1} * alpha, alpha = 2
    x = torch.tensor([[0.6], [1.4], [3.0], [-5.0], [-0.3]])
    q = _q("apot", 3, "image", x, alpha=[2.0] * 5)
    out, gx, gp = _grads(q, x)
    assert out.flatten().tolist() == [0.5, 1.0, 2.0, -2.0, -0.5]
    assert gx.flatten().tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    # RCF: d/dalpha = q(u) - u inside, sign(u) outside
    assert torch.allclose(gp["alpha"].flatten(), torch.tensor([0.25 - 0.3, 0.5 - 0.7, 1.0, -1.0, -0.25 + 0.15]), atol=1e-6)


def test_apot_level_sets():
    assert apot_levels(2, False).tolist() == [0.0, 0.25, 0.5, 1.0]
    assert torch.allclose(apot_levels(3, False), torch.tensor([0, 1, 2, 3, 4, 6, 8, 10]) / 10.0)
    assert torch.allclose(apot_levels(4, False), torch.tensor([0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]) / 48.0)
    units5 = sorted({a + b + c for a, b, c in itertools.product([0, 64, 16, 2], [0, 32, 8, 1], [0, 4])})  # 1/128ths
    assert len(units5) == 32 and torch.allclose(apot_levels(5, False), torch.tensor(units5, dtype=torch.float32) / 100.0)
    assert apot_levels(2, True).tolist() == [-1.0, 0.0, 1.0]  # ternary
    assert apot_levels(3, True).tolist() == [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
    for b in (2, 3, 4, 5, 6):
        s = apot_levels(b, True)
        assert len(s) == 2**b - 1 and torch.equal(s, -s.flip(0))
        assert torch.equal(s[s >= 0], apot_levels(b - 1, False))
    with pytest.raises(TinysetError, match="from 1 to 6"):
        build_quantizer("apot", 7)


def test_ste_and_rcf_are_gradients_of_stated_surrogates_float64():
    """gradcheck (float64) the smooth surrogates with the rounding residual frozen, then check the
    quantizers' backward passes equal their gradients."""
    torch.manual_seed(0)
    x = torch.randn(12, dtype=torch.float64) * 1.5
    # APoT: alpha * clamp(x/alpha, -1, 1) + alpha * K, K = q(u) - u frozen
    q = build_quantizer("apot", 3, "tensor").double().init_from(x)
    q.load_state({"alpha": torch.tensor([1.2])}, x.shape)
    q.double()
    u = (x / 1.2).clamp(-1, 1)
    K = (q.table.double()[torch.bucketize(u, q.mids.double())] - u).detach()

    def apot_sur(xx, a):
        return a * (xx / a).clamp(-1, 1) + a * K

    a = torch.tensor([1.2], dtype=torch.float64, requires_grad=True)
    xx = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(apot_sur, (xx, a))
    gx_ref, ga_ref = torch.autograd.grad(apot_sur(xx, a).sum(), (xx, a))
    _, gx, gp = _grads(q, x)
    assert torch.allclose(gx, gx_ref) and torch.allclose(gp["alpha"], ga_ref)

    # uniform asymmetric: lo + s * (clamp(u, 0, L) + K), s = (hi - lo)/L, u = (x - lo)/s, K frozen
    qu = build_quantizer("uniform", 3, "tensor").init_from(x.float())
    qu.load_state({"lo": torch.tensor([-1.0]), "hi": torch.tensor([2.0])}, x.shape)
    qu.double()
    L = 7
    uu = ((x + 1.0) / (3.0 / L)).clamp(0, L)
    Ku = (torch.round(uu) - uu).detach()

    def uni_sur(xx, lo, hi):
        s = (hi - lo) / L
        return lo + s * (((xx - lo) / s).clamp(0, L) + Ku)

    lo = torch.tensor([-1.0], dtype=torch.float64, requires_grad=True)
    hi = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(uni_sur, (xx, lo, hi))
    refs = torch.autograd.grad(uni_sur(xx, lo, hi).sum(), (xx, lo, hi))
    _, gx, gp = _grads(qu, x)
    assert torch.allclose(gx, refs[0]) and torch.allclose(gp["lo"], refs[1]) and torch.allclose(gp["hi"], refs[2])


def test_exact_gradients_gradcheck_float64():
    """Where the quantizer is genuinely differentiable the backward pass is the true derivative:
    codebook levels (value = chosen level) and a saturated uniform clip (value = hi)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    q = build_quantizer("codebook", 2, "channel").init_from(x).double()
    lev = q.levels.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda L: functional_call(q, {"levels": L}, (x,)), (lev,), eps=1e-7)
    xs = torch.full((4,), 3.0, dtype=torch.float64)
    qu = build_quantizer("uniform", 2, "tensor").init_from(torch.tensor([0.0, 1.0])).double()
    hi = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    lo = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: functional_call(qu, {"lo": a, "hi": b}, (xs,)), (lo, hi))


@pytest.mark.parametrize("name", ["uniform", "apot", "codebook"])
@pytest.mark.parametrize("gran", ["tensor", "channel", "image"])
def test_decode_encode_is_forward_bit_for_bit(name, gran):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 6, 6, generator=g)
    widths = range(1, 7) if name == "apot" else range(1, 9)
    options = [{}, {"ste": "calibrated"}] + ([{"grid": "midrise"}, {"ties": "even"}] if name == "uniform" else [])
    for bits, signed, opts in itertools.product(widths, (False, True), options):
        if "grid" in opts and not signed:
            continue
        q = build_quantizer(name, bits, gran, signed=signed, **opts).init_from(x)
        with torch.no_grad():
            for p in q.parameters():
                p.mul_(0.9)
        fwd = q(x.clone().requires_grad_(True)).detach()
        codes = q.encode(x)
        assert codes.min() >= 0 and codes.max() < 2**bits
        unpacked = unpack_bits(pack_bits(codes, bits), bits, codes.numel()).long().reshape(codes.shape)
        assert torch.equal(q.decode(unpacked), fwd), (name, gran, bits, signed, opts)
        state = sum(t.numel() for t in q.state().values())
        assert q.cost_bytes(x.shape) == packed_nbytes(x.numel(), bits) + 4 * state


def test_learnable_clip_reduces_error():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 4, 4)
    q = build_quantizer("uniform", 2, "channel", signed=True).init_from(x)  # alpha = max|x|: too wide
    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    err0 = float(((q(x) - x) ** 2).mean().detach())
    for _ in range(60):
        loss = ((q(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(((q(x) - x) ** 2).mean().detach()) < 0.8 * err0


def test_bad_arguments():
    with pytest.raises(TinysetError, match="bits must be an integer from 1 to 8"):
        build_quantizer("uniform", 9)
    with pytest.raises(TinysetError, match="unknown quantizer"):
        build_quantizer("nope", 3)
    with pytest.raises(TinysetError, match="granularity"):
        build_quantizer("uniform", 3, "pixel")
    with pytest.raises(TinysetError, match="not initialised"):
        build_quantizer("uniform", 3)(torch.rand(3))
    assert math.isclose(float(build_quantizer("uniform", 8).init_from(torch.tensor([0.0, 1.0])).decode(torch.tensor([255])).detach()), 1.0)
