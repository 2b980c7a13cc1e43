"""The paper's quantizer conventions as options (issue #22, item 3), pinned with hand-computed
golden values on small CPU tensors, float64 gradchecks where the gradient is smooth, the APoT
reference's own values for hand-worked cases, and artifacts written before the options existed.

- ``grid``: the signed uniform grid, ``midtread`` (default: the paper's Q^u, 2**b - 1 levels
  including 0) or ``midrise`` (2**b levels, no 0: the old grid);
- ``ste``: ``clipped`` (default) or ``calibrated`` (the gradient to the data passes outside the clip);
- ``ties``: ``away`` (default: exact halves broken on |x|, away from zero), or the old rules,
  ``even`` (uniform: torch.round) and ``down`` (APoT: toward -inf);
- APoT up to 6 bits."""
import itertools
from fractions import Fraction
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tinyset.artifact import load_artifact, quantized_components, save_artifact
from tinyset.errors import TinysetError
from tinyset.quant import apot_levels, build_quantizer, pack_bits, packed_nbytes, quantizer_from_config, unpack_bits
from tinyset.quant.space import DataSpace

GOLDEN = Path(__file__).parent / "golden_quant"


def _q(name, bits, x, gran="image", **kw):
    """A quantizer on ``x`` with its state set from the keyword args that name parameters."""
    state = {k: kw.pop(k) for k in ("alpha", "lo", "hi") if k in kw}
    q = build_quantizer(name, bits, gran, **kw).init_from(x)
    q.load_state({k: torch.as_tensor(v, dtype=torch.float32).expand(getattr(q, k).shape).clone() for k, v in state.items()}, x.shape)
    return q


def _run(q, x, g=None):
    """(value, d/dx, {param: grad}) for the loss sum(g * q(x))."""
    x = x.clone().requires_grad_(True)
    out = q(x)
    (out * (torch.ones_like(out) if g is None else g)).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in q.named_parameters()}


def _col(*v):
    return torch.tensor(v, dtype=torch.float32).reshape(-1, 1)


def _levels(q, n):
    """The values of codes 0 .. n-1 (a quantizer with one group), flattened."""
    return q.decode(torch.arange(n)).detach().flatten()


def _bits(t):
    """Exact float32 bit patterns (tells -0.0 from 0.0)."""
    return t.float().contiguous().view(torch.int32)


# ---------------------------------------------------------------------------------------------
# grid: the paper's midtread Q^u (default) and the old midrise grid
# ---------------------------------------------------------------------------------------------


def test_midtread_level_sets_by_hand():
    q2 = _q("uniform", 2, torch.zeros(2), gran="tensor", signed=True, alpha=1.0)
    assert q2.grid == "midtread" and _levels(q2, 3).tolist() == [-1.0, 0.0, 1.0]
    q3 = _q("uniform", 3, torch.zeros(2), gran="tensor", signed=True, alpha=3.0)
    assert torch.allclose(_levels(q3, 7), torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]))
    qr = _q("uniform", 2, torch.zeros(2), gran="tensor", signed=True, grid="midrise", alpha=1.5)
    assert _levels(qr, 4).tolist() == [-1.5, -0.5, 0.5, 1.5]  # no zero level


@pytest.mark.parametrize("bits", range(2, 9))
def test_midtread_has_2b_minus_1_levels_including_0_in_b_bits(bits):
    m = 2 ** (bits - 1) - 1
    q = _q("uniform", bits, torch.zeros(2), gran="tensor", signed=True, alpha=1.0)
    want = torch.tensor([Fraction(n, m) for n in range(-m, m + 1)], dtype=torch.float64).float()
    assert torch.equal(_levels(q, 2**bits - 1), want)  # n/m, once rounded to float32
    sweep = torch.linspace(-1.5, 1.5, 20001)
    codes = q.encode(sweep)
    assert codes.unique().tolist() == list(range(2**bits - 1))  # every level used, code 2**b - 1 never
    assert torch.equal(_bits(q.decode(q.encode(torch.zeros(3)))), torch.zeros(3, dtype=torch.int32))  # +0.0
    # stored bytes: still b bits a value, and the codes bit-pack and unpack exactly
    assert q.cost_bytes(sweep.shape) == packed_nbytes(sweep.numel(), bits) + 4
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits, codes.numel()).long(), codes)


def test_midtread_values_and_rcf_gradients_by_hand():
    # alpha = 2, 3 bits: m = 3, levels 2 * {0, +-1/3, +-2/3, +-1}; u = x/2, n = round(3u)
    x = _col(0.5, 1.0, -1.0, 3.0, -5.0, 0.1)
    q = _q("uniform", 3, x, signed=True, alpha=2.0)
    out, gx, gp = _run(q, x)
    assert torch.allclose(out.flatten(), torch.tensor([2 / 3, 4 / 3, -4 / 3, 2.0, -2.0, 0.0]))
    assert gx.flatten().tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    # d/dalpha = q(u) - u inside [-1, 1], sign(u) outside
    assert torch.allclose(gp["alpha"].flatten(), torch.tensor([1 / 3 - 0.25, 2 / 3 - 0.5, -2 / 3 + 0.5, 1.0, -1.0, -0.05]), atol=1e-6)
    assert torch.equal(q.encode(x).flatten(), torch.tensor([4, 5, 1, 6, 0, 3]))  # code = n + m


def _check_against_surrogate(q, x, sur, alpha: float):
    """gradcheck the float64 surrogate ``sur(x, alpha)``, then compare the quantizer's data and clip
    gradients with the surrogate's on one random upstream gradient; returns (data gradient, g)."""
    a = torch.tensor([alpha], dtype=torch.float64, requires_grad=True)
    xx = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(sur, (xx, a))
    g = torch.randn(16, dtype=torch.float64)
    gx_ref, ga_ref = torch.autograd.grad((sur(xx, a) * g).sum(), (xx, a))
    _, gx, gp = _run(q, x, g)
    assert torch.allclose(gx, gx_ref) and torch.allclose(gp["alpha"], ga_ref)
    return gx, g


def test_midtread_gradient_is_the_rcf_surrogates_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(16, dtype=torch.float64) * 1.5
    q = build_quantizer("uniform", 3, "tensor", signed=True).init_from(x.float())
    q.load_state({"alpha": torch.tensor([1.2])}, x.shape)
    q.double()
    m = 3
    u = (x / 1.2).clamp(-1, 1)
    K = (torch.round(u * m) / m - u).detach()  # the rounding residual, frozen (no exact ties here)

    def sur(xx, a):
        return a * (xx / a).clamp(-1, 1) + a * K

    _check_against_surrogate(q, x, sur, 1.2)


def test_grid_arguments():
    assert build_quantizer("uniform", 1, signed=True).grid == "midrise"  # 1 bit: {-alpha, +alpha}
    with pytest.raises(TinysetError, match="at least 2 bits"):
        build_quantizer("uniform", 1, signed=True, grid="midtread")
    with pytest.raises(TinysetError, match="applies to signed"):
        build_quantizer("uniform", 3, grid="midtread")
    with pytest.raises(TinysetError, match="grid must be one of midtread, midrise"):
        build_quantizer("uniform", 3, signed=True, grid="symmetric")
    with pytest.raises(TinysetError, match="ste must be one of clipped, calibrated"):
        build_quantizer("apot", 3, ste="full")
    with pytest.raises(TinysetError, match="ties must be one of away, down"):
        build_quantizer("apot", 3, ties="even")
    with pytest.raises(TinysetError, match="bad arguments"):
        build_quantizer("codebook", 3, ties="away")


# ---------------------------------------------------------------------------------------------
# ties: exact halves on |x|, away from zero (default), or the old rules
# ---------------------------------------------------------------------------------------------


def test_uniform_ties_by_hand():
    # midtread 2 bits, alpha 2 (levels 0, +-2): u = +-0.5 is a tie
    x = _col(1.0, -1.0, 0.5, 3.0)
    assert _run(_q("uniform", 2, x, signed=True, alpha=2.0), x)[0].flatten().tolist() == [2.0, -2.0, 0.0, 2.0]
    assert _run(_q("uniform", 2, x, signed=True, alpha=2.0, ties="even"), x)[0].flatten().tolist() == [0.0, 0.0, 0.0, 2.0]
    # midtread 3 bits, alpha 3 (levels 0, +-1, +-2, +-3): x/3 * 3 is exactly x.5 here
    x = _col(0.5, 1.5, 2.5, -0.5, -2.5)
    assert ((x / 3.0 * 3) % 1 == 0.5).all()
    assert torch.allclose(_run(_q("uniform", 3, x, signed=True, alpha=3.0), x)[0].flatten(), torch.tensor([1.0, 2, 3, -1, -3]))
    assert torch.allclose(_run(_q("uniform", 3, x, signed=True, alpha=3.0, ties="even"), x)[0].flatten(), torch.tensor([0.0, 2, 2, 0, -2]))
    # asymmetric 3 bits on [-3.5, 3.5] (step 1, levels -3.5 .. 3.5): every integer x is a tie
    x = _col(1.0, -1.0, 0.0, 2.0, -2.0, 3.0)
    away = _run(_q("uniform", 3, x, lo=-3.5, hi=3.5), x)[0].flatten().tolist()
    assert away == [1.5, -1.5, 0.5, 2.5, -2.5, 3.5]  # on |x|, away from zero (x = 0 goes up)
    even = _run(_q("uniform", 3, x, lo=-3.5, hi=3.5, ties="even"), x)[0].flatten().tolist()
    assert even == [0.5, -1.5, 0.5, 2.5, -1.5, 2.5]  # half to even on the code index x + 3.5
    # pixels on [0, 7]: away is half up
    x = _col(0.5, 1.5, 2.5)
    assert _run(_q("uniform", 3, x, lo=0.0, hi=7.0), x)[0].flatten().tolist() == [1.0, 2.0, 3.0]
    assert _run(_q("uniform", 3, x, lo=0.0, hi=7.0, ties="even"), x)[0].flatten().tolist() == [0.0, 2.0, 2.0]


def test_apot_ties_by_hand():
    # signed 3 bits, alpha 2: levels 2 * {0, +-1/4, +-1/2, +-1}; u = +-1/8, +-3/8, +-3/4 are ties
    x = _col(0.25, -0.25, 0.75, -0.75, 1.5, -1.5)
    away = _run(_q("apot", 3, x, alpha=2.0), x)[0].flatten().tolist()
    assert away == [0.5, -0.5, 1.0, -1.0, 2.0, -2.0]
    down = _run(_q("apot", 3, x, alpha=2.0, ties="down"), x)[0].flatten().tolist()
    assert down == [0.0, -0.5, 0.5, -1.0, 1.0, -2.0]  # the old rule: toward -inf
    # unsigned 2 bits {0, 1/4, 1/2, 1}: ties at 1/8, 3/8, 3/4 go up
    x = _col(0.125, 0.375, 0.75)
    assert _run(_q("apot", 2, x, signed=False, alpha=1.0), x)[0].flatten().tolist() == [0.25, 0.5, 1.0]
    assert _run(_q("apot", 2, x, signed=False, alpha=1.0, ties="down"), x)[0].flatten().tolist() == [0.0, 0.25, 0.5]
    # 6 bits: the first gap, {0, 1/448}
    lv = apot_levels(6, False)
    x = _col(float(lv[1] / 2))
    assert _run(_q("apot", 6, x, signed=False, alpha=1.0), x)[0].item() == lv[1].item()


@pytest.mark.parametrize("name,widths", [("apot", range(2, 7)), ("uniform", range(2, 9))])
def test_away_ties_make_signed_grids_odd(name, widths):
    """On |x|: q(-x) = -q(x) exactly, at every midpoint between levels (the ties) and elsewhere;
    the old apot rule (toward -inf) is not odd at the ties."""
    for bits in widths:
        q = _q(name, bits, torch.zeros(2), gran="tensor", signed=True, alpha=1.0)
        lv = _levels(q, 2**bits - 1)
        x = torch.cat([(lv[1:] + lv[:-1]) / 2, torch.linspace(-1.3, 1.3, 1001)])
        with torch.no_grad():
            assert torch.equal(q(-x), -q(x)), (name, bits)
        if name == "apot":
            qd = _q(name, bits, torch.zeros(2), gran="tensor", signed=True, alpha=1.0, ties="down")
            mids = (lv[1:] + lv[:-1]) / 2
            with torch.no_grad():
                assert not torch.equal(qd(-mids), -qd(mids))


# ---------------------------------------------------------------------------------------------
# ste: the calibrated straight-through gradient passes outside the clip
# ---------------------------------------------------------------------------------------------


def test_calibrated_ste_by_hand():
    # asymmetric uniform 2 bits on [0, 1] (the STE test's data): only d/dx changes, to 1 outside
    x = _col(0.45, -0.2, 1.3, 0.1)
    out, gx, gp = _run(_q("uniform", 2, x, lo=0.0, hi=1.0, ste="calibrated"), x)
    assert torch.allclose(out.flatten(), torch.tensor([1 / 3, 0.0, 1.0, 0.0]))
    assert gx.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    assert torch.allclose(gp["lo"].flatten(), torch.tensor([0.35 / 3, 1.0, 0.0, 0.3 / 3]), atol=1e-6)
    assert torch.allclose(gp["hi"].flatten(), torch.tensor([-0.35 / 3, 0.0, 1.0, -0.3 / 3]), atol=1e-6)
    # signed APoT 3 bits, alpha 2 (the RCF test's data, and x on the clip edge)
    x = _col(0.6, 1.4, 3.0, -5.0, -0.3, 2.0)
    out, gx, gp = _run(_q("apot", 3, x, alpha=2.0, ste="calibrated"), x)
    assert out.flatten().tolist() == [0.5, 1.0, 2.0, -2.0, -0.5, 2.0]
    assert gx.flatten().tolist() == [1.0] * 6
    # (d/dalpha on the edge itself, q - u = 0 or sign = 1, follows torch.clamp's gradient there: not pinned)
    assert torch.allclose(gp["alpha"].flatten()[:5], torch.tensor([0.25 - 0.3, 0.5 - 0.7, 1.0, -1.0, -0.25 + 0.15]), atol=1e-6)


@pytest.mark.parametrize("name,kw", [("uniform", {}), ("uniform", {"signed": True}), ("uniform", {"signed": True, "grid": "midrise"}),
                                     ("apot", {}), ("apot", {"signed": False}), ("codebook", {})])
def test_calibrated_changes_only_the_data_gradient_outside_the_clip(name, kw):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    g = torch.randn_like(x)
    runs = {}
    for ste in ("clipped", "calibrated"):
        q = build_quantizer(name, 3, "channel", ste=ste, **kw).init_from(x * 0.7)  # clips inside the data's range
        runs[ste] = _run(q, x, g)
    (v0, gx0, gp0), (v1, gx1, gp1) = runs["clipped"], runs["calibrated"]
    assert torch.equal(v0, v1) and all(torch.equal(gp0[k], gp1[k]) for k in gp0)
    inside = gx0 != 0
    assert 0 < int(inside.sum()) < x.numel()
    assert torch.allclose(gx0[inside], g[inside]) and torch.equal(gx1, g)  # 1 inside; calibrated: 1 outside too


def test_calibrated_gradient_is_its_surrogates_gradcheck_float64():
    """Calibrated APoT: alpha * clamp(x/alpha, -1, 1) + alpha * K + (x - x0) * outside, with the
    residual K and the outside mask frozen (smooth away from the clip edge)."""
    torch.manual_seed(1)
    x = torch.randn(16, dtype=torch.float64) * 1.5
    q = build_quantizer("apot", 4, "tensor", ste="calibrated").init_from(x.float())
    q.load_state({"alpha": torch.tensor([1.1])}, x.shape)
    q.double()
    u = (x / 1.1).clamp(-1, 1)
    K = (q.table.double()[q._index(u)] - u).detach()
    outside = (x.abs() > 1.1).double()
    assert 0 < outside.sum() < 16

    def sur(xx, a):
        return a * (xx / a).clamp(-1, 1) + a * K + (xx - x) * outside

    gx, g = _check_against_surrogate(q, x, sur, 1.1)
    assert torch.equal(gx, g)  # exactly 1 everywhere


# ---------------------------------------------------------------------------------------------
# APoT up to 6 bits
# ---------------------------------------------------------------------------------------------


def test_apot_six_bits():
    lv = apot_levels(6, False)
    units = sorted({a + b + c for a, b, c in itertools.product([0, 256, 32, 4], [0, 128, 16, 2], [0, 64, 8, 1])})  # 1/512ths
    assert len(units) == 64 and units[-1] == 448
    assert torch.equal(lv, torch.tensor([Fraction(n, 448) for n in units], dtype=torch.float64).float())
    s6 = apot_levels(6, True)
    assert len(s6) == 63 and torch.equal(s6[s6 >= 0], apot_levels(5, False))
    x = torch.linspace(-1.2, 1.2, 5001)
    for signed in (False, True):
        q = _q("apot", 6, torch.zeros(2), gran="tensor", signed=signed, alpha=1.0)
        codes = q.encode(x)
        assert int(codes.max()) < 64 and codes.unique().numel() == (64 if not signed else 63)
        assert q.cost_bytes(x.shape) == packed_nbytes(x.numel(), 6) + 4
        assert torch.equal(q.decode(unpack_bits(pack_bits(codes, 6), 6, codes.numel()).long()), q(x).detach())


# ---------------------------------------------------------------------------------------------
# The APoT reference (yhhhli/APoT_Quantization, quant_layer.py), hand-worked
# ---------------------------------------------------------------------------------------------

# build_power_value(B)'s base sets, in units of 2^-9 (one term from each set is summed, then the
# sums are divided by the largest)
REF_BASES = {
    2: ([0, 256, 128, 64], [0], [0]),
    3: ([0, 256, 128, 32], [0, 64], [0]),
    4: ([0, 256, 64, 16], [0, 128, 32, 8], [0]),
    5: ([0, 256, 64, 8], [0, 128, 32, 4], [0, 16]),
    6: ([0, 256, 32, 4], [0, 128, 16, 2], [0, 64, 8, 1]),
}


@pytest.mark.parametrize("bits", range(2, 7))
def test_reference_level_sets(bits):
    sums = sorted({a + b + c for a, b, c in itertools.product(*REF_BASES[bits])})
    assert len(sums) == 2**bits
    exact = torch.tensor([Fraction(s, sums[-1]) for s in sums], dtype=torch.float64).float()
    assert torch.equal(apot_levels(bits, False), exact)
    # the reference computes in float32: sums * (1 / max); at most 1 ulp from the exact levels
    ref = torch.tensor(sums, dtype=torch.float32) / 512 * (1.0 / torch.tensor(sums[-1] / 512, dtype=torch.float32))
    assert torch.allclose(apot_levels(bits, False), ref, rtol=0, atol=2**-24)
    if bits <= 4:
        assert torch.equal(apot_levels(bits, False), ref)
    # its signed (weight) sets at b + 1 bits: +- these magnitudes
    s = apot_levels(bits + 1, True) if bits + 1 <= 6 else None
    if s is not None:
        assert torch.equal(s[s >= 0], exact)
    # 2-bit weights are plain uniform {-1, 0, 1}: APoT's and the midtread grid's
    q2 = _q("uniform", 2, torch.zeros(2), gran="tensor", signed=True, alpha=1.0)
    assert torch.equal(apot_levels(2, True), _levels(q2, 3))


def test_reference_uniform_weights_on_ties_and_outside_the_clip():
    """The reference's 2-bit weights (calibrated gradients): w = alpha * round(clamp(x/alpha, -1, 1))
    with torch.round, d/dx = 1 everywhere, d/dalpha = sign(u) outside and round(u) - u inside.
    Its 3+-bit uniform weights: alpha * round(3 * clamp(u)) / 3 through autograd (clipped)."""
    ref = {"signed": True, "grid": "midtread", "ties": "even"}
    # 2 bits, alpha 2, upstream gradient g; u = .3, -.7, 1.5, -2.5, .5 (a tie: round(.5) = 0)
    x, g = _col(0.6, -1.4, 3.0, -5.0, 1.0), _col(1.0, 2.0, 3.0, 4.0, 5.0)
    out, gx, gp = _run(_q("uniform", 2, x, gran="tensor", alpha=2.0, ste="calibrated", **ref), x, g)
    assert out.flatten().tolist() == [0.0, -2.0, 2.0, -2.0, 0.0]
    assert torch.equal(gx, g)
    # 1*(0-.3) + 2*(-1+.7) + 3*1 + 4*(-1) + 5*(0-.5)
    assert abs(gp["alpha"].item() - (-4.4)) < 1e-5
    # 3 bits, alpha 2: u = +-.5 -> 3u = +-1.5 -> +-2 -> +-4/3
    x, g = _col(1.0, -1.0, 2.5, 0.2), _col(1.0, 1.0, 1.0, 1.0)
    out, gx, gp = _run(_q("uniform", 3, x, gran="tensor", alpha=2.0, **ref), x, g)
    assert torch.allclose(out.flatten(), torch.tensor([4 / 3, -4 / 3, 2.0, 0.0]))
    assert gx.flatten().tolist() == [1.0, 1.0, 0.0, 1.0]
    assert abs(gp["alpha"].item() - ((2 / 3 - 0.5) + (-2 / 3 + 0.5) + 1.0 + (0.0 - 0.1))) < 1e-5


def test_reference_apot_weights_outside_the_clip():
    """The reference's APoT weights, signed 3 bits (+- {0, 1/4, 1/2, 1}) with alpha 2: its CIFAR
    weight quantizer passes the gradient outside the clip (calibrated), its ImageNet one clips it;
    both give d/dalpha = sign(u) outside and q(u) - u inside."""
    x, g = _col(0.6, 1.4, 3.0, -5.0, -0.3), _col(1.0, 2.0, 3.0, 4.0, 5.0)
    want_alpha = 1 * (0.25 - 0.3) + 2 * (0.5 - 0.7) + 3 * 1 + 4 * (-1) + 5 * (-0.25 + 0.15)  # -1.95
    for ste, want_gx in (("calibrated", [1.0, 2.0, 3.0, 4.0, 5.0]), ("clipped", [1.0, 2.0, 0.0, 0.0, 5.0])):
        out, gx, gp = _run(_q("apot", 3, x, gran="tensor", alpha=2.0, ste=ste), x, g)
        assert out.flatten().tolist() == [0.5, 1.0, 2.0, -2.0, -0.5]
        assert gx.flatten().tolist() == want_gx
        assert abs(gp["alpha"].item() - want_alpha) < 1e-5


def test_reference_apot_ties_are_on_the_magnitude():
    """The reference projects |x| onto the level set and puts the sign back, so its ties are
    symmetric: q(-x) = -q(x). Which of two tied levels it picks follows the order its unordered
    level set happens to list them in (no fixed direction); ``away`` is symmetric too."""
    x = _col(0.25, 0.75, 1.5)  # u = 1/8, 3/8, 3/4 at alpha 2
    q = _q("apot", 3, x, gran="tensor", alpha=2.0)
    with torch.no_grad():
        assert torch.equal(q(-x), -q(x))
        assert q(x).flatten().abs().tolist() == [0.5, 1.0, 2.0]


# ---------------------------------------------------------------------------------------------
# Stored configs: new ones record the conventions; old ones decode and re-encode as before
# ---------------------------------------------------------------------------------------------

LEGACY = ["uniform_s2", "uniform_s3_channel", "uniform_u3_image", "apot_s3", "apot_u4"]


@pytest.mark.parametrize("case", LEGACY)
def test_artifacts_written_before_the_conventions_decode_and_encode_as_before(case):
    exp = safetensors.torch.load_file(str(GOLDEN / "expected.safetensors"))
    x, codes, decoded = exp[f"{case}.x"], exp[f"{case}.codes"].long(), exp[f"{case}.decoded"]
    art = load_artifact(GOLDEN / case)
    assert torch.equal(_bits(art.images), _bits(decoded))  # bit for bit, signed zeros included
    qcfg = art.manifest["decoder"]["config"]["quantizer"]
    assert not {"grid", "ste", "ties"} & set(qcfg)  # written before the keys existed
    state = {k[2:]: v for k, v in art.tensors.items() if k.startswith("q.")}
    q = quantizer_from_config(qcfg, state, list(x.shape))
    old = {"ste": "clipped", "ties": "down" if qcfg["name"] == "apot" else "even"}
    if qcfg["name"] == "uniform" and qcfg["signed"]:
        old["grid"] = "midrise"
    assert q.config() == {**qcfg, **old}
    assert torch.equal(q.encode(x), codes)  # the old tie rules, rebuilt
    with torch.no_grad():
        assert torch.equal(q(x), decoded)  # the forward pass adds +0.0, so its zeros are +0.0 (as before)


def test_legacy_golden_values_by_hand():
    """The golden artifacts' values, worked by hand (so the files cannot drift unnoticed)."""
    exp = safetensors.torch.load_file(str(GOLDEN / "expected.safetensors"))
    # midrise alpha 1.5 (levels -1.5, -.5, .5, 1.5), ties half to even on the code index x + 1.5
    assert exp["uniform_s2.decoded"].flatten().tolist() == [-1.5, 0.5, 0.5, -0.5, 0.5, 1.5, -1.5, 1.5, -0.5, 0.5, 1.5, -1.5]
    # APoT toward -inf: u = 1/8 -> 0 (stored as -0.0), -1/8 -> -1/4, 3/8 -> 1/4, -3/8 -> -1/2, 3/4 -> 1/2, -3/4 -> -1
    assert exp["apot_s3.decoded"].flatten()[:6].tolist() == [0.0, -0.5, 0.5, -1.0, 1.0, -2.0]
    # and under today's defaults the same inputs land elsewhere: the defaults did change
    x = exp["apot_s3.x"]
    with torch.no_grad():
        assert _q("apot", 3, x, gran="tensor", alpha=2.0)(x).flatten()[:6].tolist() == [0.5, -0.5, 1.0, -1.0, 2.0, -2.0]
        x = exp["uniform_s2.x"]
        assert _q("uniform", 2, x, gran="tensor", signed=True, alpha=1.5)(x).flatten()[:3].tolist() == [-1.5, 0.0, 1.5]


@pytest.mark.parametrize("name,kw", [("uniform", {"signed": True}), ("uniform", {"signed": True, "grid": "midrise", "ties": "even"}),
                                     ("uniform", {"ste": "calibrated"}), ("apot", {"bits": 6, "ties": "down"}),
                                     ("apot", {"signed": False, "ste": "calibrated"}), ("codebook", {"ste": "calibrated"})])
def test_new_artifacts_record_their_conventions(tmp_path, name, kw):
    kw = {"bits": 3, **kw}
    torch.manual_seed(0)
    latent = torch.randn(6, 2, 4, 4)
    q = build_quantizer(name, granularity="channel", **kw).init_from(latent)
    cfg = q.config()
    assert {"ste"} <= set(cfg) and ({"ties"} <= set(cfg)) == (name != "codebook")
    assert ("grid" in cfg) == (name == "uniform" and q.signed)
    comps, bitmap, roles, dcfg = quantized_components(latent, torch.arange(6) % 3, q, num_classes=3, space=DataSpace())
    out = save_artifact(tmp_path / "a", comps, {"dataset": "t", "bits": bitmap}, decoder="quantized", decoder_config=dcfg, roles=roles)
    art = load_artifact(out)
    assert art.manifest["decoder"]["config"]["quantizer"] == cfg
    with torch.no_grad():
        assert torch.equal(art.images, q(latent))
    assert art.manifest["components"]["codes"]["bytes"] == packed_nbytes(latent.numel(), kw["bits"])
    state = {k[2:]: v for k, v in art.tensors.items() if k.startswith("q.")}
    assert quantizer_from_config(cfg, state, list(latent.shape)).config() == cfg


def test_loop_config_passes_the_conventions():
    from tinyset.config import apply_mapping
    from tinyset.data.base import DatasetInfo
    from tinyset.quant.inloop import LoopQuantizer, QuantizerConfig, set_cost_bytes

    qcfg = apply_mapping(QuantizerConfig(), {"name": "uniform", "bits": 2, "signed": True, "grid": "midrise",
                                             "ste": "calibrated", "ties": "even"})
    info = DatasetInfo("t", 2, ("a", "b"), (3, 4, 4), (0.5,) * 3, (0.2,) * 3)
    lq = LoopQuantizer(qcfg, torch.rand(4, 3, 4, 4), info)
    assert {k: lq.q.config()[k] for k in ("grid", "ste", "ties")} == {"grid": "midrise", "ste": "calibrated", "ties": "even"}
    default = LoopQuantizer(QuantizerConfig(name="uniform", bits=2, signed=True), torch.rand(4, 3, 4, 4), info)
    assert (default.q.grid, default.q.ste, default.q.ties) == ("midtread", "clipped", "away")
    # the grid does not change the stored bytes: 2**b - 1 levels still take b bits
    sizes = {set_cost_bytes(QuantizerConfig(name="uniform", bits=3, signed=True, grid=g), 10, (3, 4, 4), 2) for g in ("midtread", "midrise")}
    assert len(sizes) == 1
    payload = (10 * 48 * 6 + 7) // 8 + 4 + (10 + 7) // 8  # 6-bit codes + one alpha + 1-bit labels
    assert QuantizerConfig(name="apot", bits=6).build().cost_bytes((10, 3, 4, 4)) + (10 + 7) // 8 == payload
    # set_bytes adds the safetensors header and the decoder config it carries (tests/test_bytes.py)
    assert set_cost_bytes(QuantizerConfig(name="apot", bits=6), 10, (3, 4, 4), 2) > payload

