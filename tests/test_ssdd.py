"""Self-supervised distillation: the KRR solve, gradients into every learnable piece, exact
rotations, view networks, storage accounting against the budget, SSL teacher resume, transfer."""
from __future__ import annotations

import math

import pytest
import torch

from tinyset.artifact import load_artifact
from tinyset.config import RunConfig
from tinyset.errors import TinysetError
from tinyset.eval.transfer import AdaptedSplit, TransferConfig, evaluate_transfer
from tinyset.param.view_nets import fit_view_net, view_net_from_state, view_net_state
from tinyset.param.bases import BasesParam, pca_bases, project, random_bases
from tinyset.methods.krr import krr_predict, with_bias
from tinyset.methods.krr_st import PixelSupport, PoolNet
from tinyset.methods.ssdd import BasesSupport, SSDDConfig, ssdd_floats
from tinyset.models import get_model
from tinyset.jobs.distill import distill
from tinyset.teachers.ssl import SSLConfig, get_ssl_teacher
from tinyset.jobs.distill_ssl import load_pretrain_pairs
from tinyset.data.views import all_views, rotate, unrotate

TINY = "convnet:depth=2,width=8"


def test_krr_matches_direct_ridge_least_squares():
    g = torch.Generator().manual_seed(0)
    hs, ht = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    ys = torch.randn(12, 3, generator=g, dtype=torch.float64)
    reg = 1e-3
    pred = krr_predict(ht, hs, ys, reg)
    # primal ridge on the bias-augmented features: min ||A w - Y||^2 + lam ||w||^2, solved as a stacked least squares
    a, b = with_bias(hs), with_bias(ht)
    lam = reg * float((a @ a.T).trace())
    stacked = torch.cat([a, math.sqrt(lam) * torch.eye(a.shape[1], dtype=a.dtype)])
    w = torch.linalg.lstsq(stacked, torch.cat([ys, torch.zeros(a.shape[1], 3, dtype=a.dtype)])).solution
    assert torch.allclose(pred, b @ w, atol=1e-8)
    # with tiny regularisation and more features than samples, the support targets are interpolated
    wide = torch.randn(6, 20, generator=g, dtype=torch.float64)
    assert torch.allclose(krr_predict(wide, wide, ys[:6], 1e-10), ys[:6], atol=1e-5)


def test_krr_gradcheck():
    g = torch.Generator().manual_seed(1)
    hs = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ys = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(3, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h, y: krr_predict(ht, h, y, lam=0.1), (hs, ys))


def _krr_loss(support, net, xt, yt):
    xs, ys = support.support()
    return (krr_predict(net.features(xt), net.features(xs), ys) - yt).pow(2).mean()


def test_gradients_reach_images_targets_bases_and_coefficients(digits):
    torch.manual_seed(0)
    import dataclasses

    info = dataclasses.replace(digits.info, num_classes=6)
    net = PoolNet(get_model(TINY, info))
    x, _ = digits.train.get_batch(torch.arange(8))
    xt, _ = digits.train.get_batch(torch.arange(8, 24))
    yt = torch.randn(16, 6)
    pix = PixelSupport(x, torch.randn(8, 6))
    _krr_loss(pix, net, xt, yt).backward()
    assert pix.images.grad.abs().sum() > 0 and pix.targets.grad.abs().sum() > 0
    low = torch.nn.functional.interpolate(x, size=(8, 8), mode="area")
    ib = pca_bases(low, 5)
    rb = random_bases(4, 6, torch.Generator().manual_seed(0))
    param = BasesParam(project(low, ib), ib, torch.randn(2, 8, 4), rb, (1, 8, 8), 16)
    sup = BasesSupport(param, (0, 1))
    loss = _krr_loss(sup, net, torch.cat([xt, rotate(xt, 1)]), torch.cat([yt, yt]))
    loss.backward()
    for name in ("image_coeff", "image_bases", "repr_coeff", "repr_bases"):
        grad = getattr(param, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert param.repr_coeff.grad[1].abs().sum() > 0  # the rotated view's own coefficients are used


def test_rotations_are_exact_and_invertible():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    for k in range(4):
        assert torch.equal(unrotate(rotate(x, k), k), x)
    assert torch.equal(rotate(rotate(rotate(rotate(x, 1), 1), 1), 1), x)
    # a quarter turn counter-clockwise moves the top-right pixel to the top-left
    assert rotate(x, 1)[0, 0, 0, 0] == x[0, 0, 0, 3]
    assert torch.equal(rotate(x, 2), x.flip(-1).flip(-2))
    v = all_views(x, (0, 1, 2, 3))
    assert v.shape == (8, 3, 4, 4) and torch.equal(v[2:4], rotate(x, 1))


def test_projection_onto_pca_bases_reconstructs_the_span():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g) @ torch.randn(4, 20, generator=g)  # rank 4
    b = pca_bases(x, 4)
    assert torch.allclose(project(x, b) @ b, x, atol=1e-4)
    r = random_bases(5, 20, g)
    assert torch.allclose(r @ r.T, torch.eye(5), atol=1e-5)


def test_view_network_reproduces_the_coefficients_it_was_fitted_to():
    g = torch.Generator().manual_seed(0)
    c0 = torch.randn(64, 10, generator=g)
    w = torch.randn(10, generator=g)
    cr = c0 + 0.5 * torch.relu(c0 @ w).unsqueeze(1) * torch.linspace(-1, 1, 10)  # a rank-1 residual a 4-unit net can fit
    net, rel = fit_view_net(c0, cr, hidden=4, steps=500, lr=2e-2)
    assert rel < 0.05
    again = view_net_from_state(view_net_state(net, "view1"), "view1")
    with torch.no_grad():
        assert torch.equal(again(c0), net(c0))


@pytest.fixture(scope="module")
def ssl_teacher(digits, teacher_cache):
    return get_ssl_teacher(digits, SSLConfig(model=TINY, epochs=1, batch_size=256, proj_dim=64,
                                             cache_dir=str(teacher_cache)), "cpu", progress=False)


def _ssl_run(tmp_path, method, teacher_cache, **args):
    cfg = RunConfig(method=method, device="cpu")
    cfg.teacher.model, cfg.teacher.epochs, cfg.teacher.cache_dir = TINY, 1, str(teacher_cache)
    cfg.method_args = {"steps": 2, "pool_size": 1, "pool_reinit": 2, "model": TINY, "batch_size": 32, **args}
    return distill(cfg, tmp_path / method, progress=False)


def test_ssdd_storage_matches_the_manifest_and_budget(tmp_path, digits, ssl_teacher, teacher_cache, monkeypatch):
    monkeypatch.setattr("tinyset.jobs.distill_ssl.SSLConfig.from_teacher_config",
                        classmethod(lambda cls, t, method="barlow_twins", **o: SSLConfig(model=TINY, epochs=1, batch_size=256,
                                                                                        proj_dim=64, cache_dir=str(teacher_cache))))
    budget = 12
    args = dict(budget=budget, image_bases=8, repr_bases=8, low_res=8, approx_steps=50, pca_samples=300)
    res = _ssl_run(tmp_path, "ssdd", teacher_cache, **args)
    man = res.manifest
    floats = sum(math.prod(c["shape"]) for c in man["components"].values())
    assert floats == man["stored_floats"] and man["total_bytes"] == 4 * floats
    assert floats <= budget * math.prod(digits.info.shape)
    m = man["synthesis"]["m"]
    cfg = SSDDConfig(image_bases=8, repr_bases=8)
    assert floats == ssdd_floats(m, cfg, (1, 8, 8), ssl_teacher.dim)
    assert floats + (cfg.image_bases + cfg.repr_bases) > budget * math.prod(digits.info.shape)  # one more image would not fit
    x, y, _ = load_pretrain_pairs(res.path)
    assert x.shape == (4 * m, 1, 16, 16) and y.shape == (4 * m, ssl_teacher.dim)
    assert man["decoder"]["config"]["clamp"] is False  # the reference's default: pixels as optimised, unclamped
    assert torch.equal(x[m:2 * m], rotate(x[:m], 1))  # exact views
    assert set(man["synthesis"]["approx_zero_shift_error"]) == {"1", "2", "3"}  # the networks' error beside its baseline
    assert man["decoder"]["name"] == "bases" and "view3.fc1.weight" in load_artifact(res.path).tensors
    # storing every view's coefficients instead of the networks: fewer images in the same budget
    res2 = _ssl_run(tmp_path / "stored", "ssdd", teacher_cache, **{**args, "approx": False})
    assert res2.manifest["synthesis"]["m"] < m and res2.manifest["stored_floats"] <= budget * 256
    assert load_artifact(res2.path).tensors["repr_coeff"].shape[0] == 4


def test_krr_st_run_and_transfer(tmp_path, digits, ssl_teacher, teacher_cache, monkeypatch):
    monkeypatch.setattr("tinyset.jobs.distill_ssl.SSLConfig.from_teacher_config",
                        classmethod(lambda cls, t, method="barlow_twins", **o: SSLConfig(model=TINY, epochs=1, batch_size=256,
                                                                                        proj_dim=64, cache_dir=str(teacher_cache))))
    res = _ssl_run(tmp_path, "krr_st", teacher_cache, m=12)
    x, y, man = load_pretrain_pairs(res.path)
    assert x.shape == (12, 1, 16, 16) and y.shape == (12, ssl_teacher.dim)
    assert man["stored_floats"] == 12 * (256 + ssl_teacher.dim)
    cfg = TransferConfig(model=TINY, seeds=2, pretrain_steps=4, probe_steps=20, finetune_epochs=1, max_train=200, max_test=100)
    rep = evaluate_transfer(x, y, digits.info, digits, cfg, "cpu")
    assert rep["linear"]["seeds"] == 2 and 10 < rep["linear"]["mean"] <= 100
    assert 0 <= rep["finetune"]["mean"] <= 100 and rep["train_images"] == 200
    none = evaluate_transfer(None, None, digits.info, digits, cfg, "cpu")
    assert none["pretrain_pairs"] == 0 and none["linear"]["accuracies"] != rep["linear"]["accuracies"]
    # ``tinyset eval RUN --transfer digits``: the run, no pre-training and a same-storage random subset
    # (the teacher reloaded from the manifest's encoder checkpoint), written beside the run
    from tinyset.jobs.distill_ssl import transfer_run

    rcfg = RunConfig(device="cpu")
    rcfg.teacher.cache_dir = str(teacher_cache)
    over = [{"model": TINY, "seeds": 1, "pretrain_steps": 2, "probe_steps": 10, "modes": ["linear"], "max_train": 100, "max_test": 50}]
    table = transfer_run(res.path, "digits", rcfg, over, progress=False)
    assert "| krr_st | linear | 1 |" in table and "no_pretrain" in table and "random (12 images)" in table
    assert (res.path / "transfer-digits.json").exists()


def test_adapted_split_converts_channels_and_size(digits):
    s = AdaptedSplit(digits.test, (3, 32, 32), limit=50)
    x, y = s.get_batch(torch.arange(5))
    assert len(s) == 50 and x.shape == (5, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2]) and y.shape == (5,)


def test_bad_budget_and_views_are_one_line_errors(tmp_path, digits, ssl_teacher, teacher_cache, monkeypatch):
    monkeypatch.setattr("tinyset.jobs.distill_ssl.SSLConfig.from_teacher_config",
                        classmethod(lambda cls, t, method="barlow_twins", **o: SSLConfig(model=TINY, epochs=1, batch_size=256,
                                                                                        proj_dim=64, cache_dir=str(teacher_cache))))
    with pytest.raises(TinysetError, match="budget"):
        _ssl_run(tmp_path, "ssdd", teacher_cache, budget=1, image_bases=8, repr_bases=8)
    with pytest.raises(TinysetError, match="views"):
        _ssl_run(tmp_path / "b", "ssdd", teacher_cache, views=[1, 2], m=4, image_bases=4, repr_bases=4, pca_samples=50)


def test_ssl_teacher_resumes_to_identical_weights(digits, tmp_path, monkeypatch):
    from tinyset.data.base import Dataset
    from tinyset.utils.runlog import JsonlLog

    small = Dataset(digits.info, AdaptedSplit(digits.train, digits.info.shape, limit=300), None)
    cfg = dict(model=TINY, epochs=2, batch_size=100, proj_dim=16)
    full = get_ssl_teacher(small, SSLConfig(**cfg, cache_dir=str(tmp_path / "a")), "cpu", progress=False)
    real_write = JsonlLog.write

    def interrupt(self, event, **kw):
        if event == "ssl_teacher" and kw.get("epoch") == 1:
            raise KeyboardInterrupt
        return real_write(self, event, **kw)

    monkeypatch.setattr(JsonlLog, "write", interrupt)
    with pytest.raises(KeyboardInterrupt):
        get_ssl_teacher(small, SSLConfig(**cfg, cache_dir=str(tmp_path / "b")), "cpu", progress=False)
    monkeypatch.setattr(JsonlLog, "write", real_write)
    resumed = get_ssl_teacher(small, SSLConfig(**cfg, cache_dir=str(tmp_path / "b")), "cpu", progress=False)
    a, b = full.encoder.state_dict(), resumed.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.dim == 8 * 4 * 4
