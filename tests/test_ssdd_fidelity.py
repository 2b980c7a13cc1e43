"""Issue 23's fidelity fixes of KRR-ST / boosted SSDD, each on tiny CPU tensors: the rank warning,
BatchNorm in eval mode in the outer step, live-teacher real batches on the augmented view, the
reference's pool schedule, the lr decaying to 1e-3 of its start, decoded images = optimised images,
transfer with equal steps and one pre-training per seed for every target, the target's own
normalisation, supervised runs in `eval --transfer`, the view networks beside their zero-shift
baseline, the pinned SSL teacher and the benchmark's smoke run."""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyset.artifact.bases_decoder import decode_bases
from tinyset.data.base import Dataset
from tinyset.data.views import all_views, rotate
from tinyset.eval import transfer as T
from tinyset.methods.krr_st import (KRRSTConfig, ModelPool, PixelSupport, PoolNet, RealBatches, check_rank, lr_factor,
                                    outer_loss, run_krr_st)
from tinyset.methods.ssdd import BasesSupport, SSDDConfig, decoder_config, store_set
from tinyset.models import get_model
from tinyset.models.encoder import encoder_from_model
from tinyset.param.bases import BasesParam, PixelViewsParam, random_bases
from tinyset.param.view_nets import fit_view_net, zero_shift_error

ROOT = Path(__file__).resolve().parent.parent
TINY = "convnet:depth=2,width=4"


def _info(ds, dim):
    return dataclasses.replace(ds.info, num_classes=dim, class_names=tuple(map(str, range(dim))))


def _pool_net(ds, dim=6, spec=TINY, seed=0):
    torch.manual_seed(seed)
    return PoolNet(get_model(spec, _info(ds, dim)))


def _encoder(ds, dim=6, seed=1):
    torch.manual_seed(seed)
    return encoder_from_model(get_model("convnet:depth=1,width=4", _info(ds, dim))).eval()


# 1. full-rank kernel ------------------------------------------------------------------------------

def test_rank_warning_fires_when_features_plus_one_are_fewer_than_the_support(digits, caplog):
    assert check_rank(40, 41, "t") and check_rank(40, 30, "t")
    with caplog.at_level(logging.WARNING, logger="tinyset.methods.krr_st"):
        assert not check_rank(40, 42, "t")
    assert sum("rank-deficient" in r.message for r in caplog.records) == 1
    # in the loop: TINY at 16 px has 4 * 4 * 4 = 64 features; 70 support pairs warn once, 40 do not
    caplog.clear()
    x, _ = digits.train.get_batch(torch.arange(70))
    cfg = KRRSTConfig(steps=2, batch_size=8, pool_size=1, pool_reinit=2, model=TINY, real="cached")
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, len(digits.train), 6)
    for n, warns in ((70, 1), (40, 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tinyset.methods.krr_st"):
            stats = run_krr_st(PixelSupport(x[:n], torch.randn(n, 6)), digits, RealBatches(digits, cfg, (0,), g, "cpu", feats=feats),
                               cfg, "cpu", g, progress=False)
        assert sum("rank-deficient" in r.message for r in caplog.records) == warns
        assert stats["feature_dim"] == 64 and stats["support_size"] == n and stats["full_rank"] == (warns == 0)


# 2. BatchNorm in eval mode in the outer step ----------------------------------------------------------

def test_outer_step_uses_and_keeps_the_running_batchnorm_statistics(digits):
    net = _pool_net(digits)
    with torch.no_grad():  # non-trivial running statistics, as a pool network has after inner steps
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, _ = digits.train.get_batch(torch.arange(10))
    xt, _ = digits.train.get_batch(torch.arange(10, 30))
    sup = PixelSupport(x, torch.randn(10, 6))
    yt = torch.randn(20, 6)
    cfg = KRRSTConfig()
    assert cfg.pool_bn == "eval"  # the reference's default
    loss, p = outer_loss(net, sup, xt, yt, cfg)
    loss.backward()
    assert not net.training and p == 64
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # buffers untouched
    from tinyset.methods.krr import krr_predict

    with torch.no_grad():  # the loss is the one of eval-mode features (running statistics for both batches)
        ref = (krr_predict(net.eval().features(xt), net.features(x), sup.targets, cfg.reg) - yt).pow(2).mean()
    assert torch.allclose(loss.detach(), ref, rtol=1e-5)
    # the per-batch option normalises each batch by itself (another loss) and also leaves the buffers alone
    loss_train, _ = outer_loss(net, sup, xt, yt, dataclasses.replace(cfg, pool_bn="train"))
    assert net.training and not torch.allclose(loss_train.detach(), ref, rtol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# 3. real batches --------------------------------------------------------------------------------------

def test_live_real_batches_run_the_teacher_on_the_augmented_view(digits):
    enc = _encoder(digits)
    cfg = KRRSTConfig(batch_size=32, real="live", real_pad=4)
    assert (KRRSTConfig().batch_size, KRRSTConfig().real, KRRSTConfig().real_pad) == (1024, "live", 4)  # reference
    views = (0, 1, 2, 3)
    xt, yt = RealBatches(digits, cfg, views, torch.Generator().manual_seed(3), "cpu", encoder=enc).draw()
    assert xt.shape == (32, 1, 16, 16) and yt.shape == (32, enc(xt[:1]).shape[1])
    with torch.no_grad():
        assert torch.allclose(yt, enc(xt), atol=1e-6)  # targets are the teacher's features of exactly these images
    # the same draws without augmentation: the clean (turned) images and their features differ
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(len(digits.train), (32,), generator=g)
    v = torch.randint(len(views), (32,), generator=g)
    x, _ = digits.train.get_batch(idx)
    clean = torch.cat([rotate(x[v == j], k) for j, k in enumerate(views)])
    assert not torch.equal(xt, clean)
    with torch.no_grad():
        assert not torch.allclose(yt, enc(clean), atol=1e-4)
    assert (xt == 0).flatten(1).all(1).sum() == 0 and (xt.flatten(2) == 0).any()  # zero padding shows up at the borders
    # the cached path: the clean images' stored features, no augmentation
    feats = torch.randn(4, len(digits.train), 5)
    xc, yc = RealBatches(digits, dataclasses.replace(cfg, real="cached"), views, torch.Generator().manual_seed(3), "cpu",
                         feats=feats).draw()
    assert torch.equal(xc, clean) and torch.equal(yc, torch.cat([feats[j, idx[v == j]] for j in range(4)]))


def test_real_views_option_keeps_real_images_upright(digits):
    from tinyset.methods.krr_st import make_real

    class _T:
        encoder = _encoder(digits)

    cfg = KRRSTConfig(batch_size=8, real_views=False)
    assert make_real(digits, cfg, (0, 1, 2, 3), _T, "cpu", torch.Generator()).views == (0,)
    assert make_real(digits, dataclasses.replace(cfg, real_views=True), (0, 1), _T, "cpu", torch.Generator()).views == (0, 1)


# 4. model pool ----------------------------------------------------------------------------------------

def test_pool_follows_the_reference_schedule(digits):
    cfg = KRRSTConfig(pool_size=3, pool_reinit=3, model=TINY)
    assert (KRRSTConfig().pool_lr, KRRSTConfig().pool_weight_decay, KRRSTConfig().pool_reinit) == (0.1, 1e-3, 1000)
    x, _ = digits.train.get_batch(torch.arange(8))
    sup = PixelSupport(x, torch.randn(8, 6))
    pool = ModelPool(cfg, digits, 6, "cpu", torch.Generator().manual_seed(0))
    pool.init(sup)
    assert all(1 <= a < 3 for a in pool.ages) and pool.inner_steps == sum(pool.ages)  # [1, Z) steps, as the reference
    opt = pool.opts[0]
    assert opt.defaults["lr"] == 0.1 and opt.defaults["weight_decay"] == 1e-3 and opt.defaults["momentum"] == 0.9
    while pool.ages[0] < 3:
        pool.step(0, sup)
    net, steps = pool.nets[0], pool.inner_steps
    pool.step(0, sup)  # the use after Z steps replaces the network and does not train it
    assert pool.nets[0] is not net and pool.ages[0] == 0 and pool.inner_steps == steps and pool.resets == 1
    pool.step(0, sup)  # tinyset restarts the counter (the reference's never does): the fresh one trains again
    assert pool.ages[0] == 1 and pool.inner_steps == steps + 1


# 5. schedules, clamp, decoded = optimised -------------------------------------------------------------

def test_outer_lr_decays_linearly_to_a_thousandth(digits):
    assert lr_factor(0, 10) == 1.0 and lr_factor(10, 10) == pytest.approx(1e-3) and lr_factor(5, 10) == pytest.approx(0.5005)
    x, _ = digits.train.get_batch(torch.arange(6))
    cfg = KRRSTConfig(steps=4, batch_size=8, pool_size=1, pool_reinit=2, model=TINY, real="cached", image_lr=1e-2,
                      target_lr=2e-2)
    g = torch.Generator().manual_seed(0)
    stats = run_krr_st(PixelSupport(x, torch.randn(6, 6)), digits,
                       RealBatches(digits, cfg, (0,), g, "cpu", feats=torch.randn(1, len(digits.train), 6)), cfg, "cpu", g,
                       progress=False)
    assert stats["final_lr"] == pytest.approx([1e-5, 2e-5])


def test_pixels_are_not_clamped_in_the_loop_unless_asked(digits):
    x = torch.rand(4, 1, 16, 16) * 2 - 0.5
    sup = PixelSupport(x, torch.randn(4, 6))
    sup.clamp_()
    assert torch.equal(sup.images.detach(), x)  # reference: never clamped
    sup = PixelSupport(x, torch.randn(4, 6), clamp=True)
    sup.clamp_()
    assert sup.images.min() >= 0 and sup.images.max() <= 1


@pytest.mark.parametrize("clamp", [False, True])
@pytest.mark.parametrize("approx", [False, True])
def test_decoded_images_are_the_optimised_images(clamp, approx):
    g = torch.Generator().manual_seed(0)
    views = (0, 1, 2, 3)
    ib = random_bases(6, 1 * 8 * 8, g)
    param = BasesParam(torch.randn(5, 6, generator=g) * 4, ib, torch.randn(4, 5, 3, generator=g), random_bases(3, 7, g),
                       (1, 8, 8), 16, clamp=clamp)
    sup = BasesSupport(param, views)
    xs, ys = sup.support()
    assert (xs.min() < 0 or xs.max() > 1) != clamp  # unclamped pixels leave [0, 1]: the test means something
    cfg = SSDDConfig(approx_steps=5)
    tensors, err, zero = store_set(param, views, approx, cfg, g)
    dec = decode_bases(tensors, decoder_config(param, views, approx, clamp))
    assert torch.allclose(dec["images"], xs.detach(), atol=1e-6)
    if not approx:
        assert torch.allclose(dec["targets"], ys.detach(), atol=1e-5)
    else:
        assert set(err) == set(zero) == {"1", "2", "3"}
    # no bases: pixels and raw targets per view (the pixels_views row)
    pv = PixelViewsParam(torch.rand(3, 1, 16, 16) * 2 - 0.5, torch.randn(4, 3, 7), clamp=clamp)
    sup = BasesSupport(pv, views)
    tensors, _, _ = store_set(pv, views, approx, cfg, g)
    dec = decode_bases(tensors, decoder_config(pv, views, approx, clamp))
    assert torch.allclose(dec["images"], sup.support()[0].detach()) and dec["targets"].shape == (12, 7)
    # artifacts from before the clamp key decode as they always did (clamped)
    old = decode_bases(tensors, {"views": list(views), "approx": approx})
    assert old["images"].min() >= 0 and old["images"].max() <= 1


# 8. view networks beside the zero-shift baseline -----------------------------------------------------

def test_view_network_error_sits_beside_the_zero_shift_baseline():
    g = torch.Generator().manual_seed(0)
    c0 = torch.randn(64, 10, generator=g)
    cr = c0 + 0.5 * torch.relu(c0 @ torch.randn(10, generator=g)).unsqueeze(1) * torch.linspace(-1, 1, 10)
    net, rel = fit_view_net(c0, cr, hidden=4, steps=300, lr=2e-2)
    zero = zero_shift_error(c0, cr)
    assert zero == pytest.approx(float((c0 - cr).norm() / cr.norm())) and rel < zero
    assert zero_shift_error(cr, cr) == 0.0


# 6. transfer protocol ---------------------------------------------------------------------------------

def test_pretraining_takes_equal_steps_for_sets_of_different_sizes(digits, monkeypatch):
    counts = []

    class Counting(torch.optim.AdamW):
        def step(self, *a, **k):
            counts[-1] += 1
            return super().step(*a, **k)

    monkeypatch.setattr(T.torch.optim, "AdamW", Counting)
    x, _ = digits.train.get_batch(torch.arange(40))
    cfg = T.TransferConfig(model=TINY, pretrain_steps=5, pretrain_batch=8)
    for n in (8, 40):
        counts.append(0)
        T.pretrain(x[:n], torch.randn(n, 6), digits.info, cfg, 0, "cpu")
    assert counts == [5, 5]
    # the epoch option (the old behaviour): a set with 5x the pairs gets 5x the steps
    cfg = dataclasses.replace(cfg, pretrain_steps=None, pretrain_epochs=2)
    for n in (8, 40):
        counts.append(0)
        T.pretrain(x[:n], torch.randn(n, 6), digits.info, cfg, 0, "cpu")
    assert counts[2:] == [2, 10] and T.pretrain_step_count(40, cfg) == 10


def _targets(digits):
    return [T.TransferTarget("lo", T.subset_dataset(digits, range(5), 120, 60), ("linear", "finetune")),
            T.TransferTarget("hi", T.subset_dataset(digits, range(5, 10), 120, 60), ("linear",))]


def test_one_pretraining_per_seed_serves_every_target_with_its_own_normalisation(digits, monkeypatch):
    calls = []
    real = T.pretrain

    def counting(*a, **k):
        calls.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(T, "pretrain", counting)
    seen = []
    real_probe = T.linear_probe

    def probe(body, tr, te, *a, **k):
        seen.append((body.mean.flatten().tolist(), body.std.flatten().tolist()))
        return real_probe(body, tr, te, *a, **k)

    monkeypatch.setattr(T, "linear_probe", probe)
    targets = _targets(digits)
    x, _ = digits.train.get_batch(torch.arange(16))
    cfg = T.TransferConfig(model=TINY, seeds=2, pretrain_steps=2, probe_steps=5, finetune_epochs=1)
    rep = T.evaluate_transfer_targets(x, torch.randn(16, 6), digits.info, targets, cfg, "cpu")
    assert len(calls) == 2 and len(set(calls)) == 2  # once per seed, not once per target
    assert set(rep) == {"lo", "hi"} and rep["lo"]["linear"]["seeds"] == 2 and "finetune" in rep["lo"] and "finetune" not in rep["hi"]
    assert rep["lo"]["pretrain_steps"] == 2 and rep["lo"]["normalization"] == "target"
    # each target is read with its own mean/std, not the source's
    lo_mean = list(T.subset_dataset(digits, range(5), 120, 60).info.mean)
    hi_mean = list(T.subset_dataset(digits, range(5, 10), 120, 60).info.mean)
    assert seen[0][0] == pytest.approx(lo_mean, abs=1e-4) and seen[1][0] == pytest.approx(hi_mean, abs=1e-4)
    assert seen[0][0] != pytest.approx(list(digits.info.mean), abs=1e-4)
    seen.clear()
    T.evaluate_transfer_targets(None, None, digits.info, targets[1:], dataclasses.replace(cfg, seeds=1,
                                target_normalization="source"), "cpu")
    assert seen[0][0] == pytest.approx(list(digits.info.mean), abs=1e-6)


def test_teacher_probe_and_labelled_pretraining(digits):
    targets = _targets(digits)[1:]
    cfg = T.TransferConfig(model=TINY, seeds=1, pretrain_steps=3, probe_steps=20, modes=("linear",))
    rep = T.probe_encoder(_encoder(digits), targets, digits.info, cfg)
    assert 0 < rep["hi"]["linear"]["mean"] <= 100 and rep["hi"]["pretrain_pairs"] == 0
    x, y = digits.train.get_batch(torch.arange(30))
    rep = T.evaluate_transfer_targets(x, None, digits.info, targets, cfg, labels=y)
    assert rep["hi"]["pretrain_loss"] == "cross-entropy" and rep["hi"]["pretrain_pairs"] == 30


# 7. eval --transfer on a supervised run --------------------------------------------------------------

def test_transfer_run_accepts_a_supervised_run(tmp_path, digits):
    from tinyset.config import RunConfig
    from tinyset.jobs.distill import distill
    from tinyset.jobs.distill_ssl import transfer_run

    cfg = RunConfig(method="random", ipc=2, device="cpu", evaluate=False)  # a labelled random subset of digits
    res = distill(cfg, tmp_path / "rnd", progress=False)
    over = [{"model": TINY, "seeds": 1, "pretrain_steps": 2, "probe_steps": 5, "modes": ["linear"], "max_train": 100,
             "max_test": 50}]
    table = transfer_run(res.path, "digits", RunConfig(device="cpu"), over, progress=False)
    assert "| random | linear | 1 |" in table and "no_pretrain" in table and "random (20 labelled images)" in table
    import json

    rep = json.loads((res.path / "transfer-digits.json").read_text())
    assert rep["pretrain"] == "cross-entropy on labels" and rep["rows"]["random"]["pretrain_loss"] == "cross-entropy"


# pinned SSL teacher and the benchmark ----------------------------------------------------------------

@pytest.fixture()
def pinned(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    mod = importlib.import_module("pinned")
    from tinyset.teachers.ssl import SSLConfig

    monkeypatch.setattr(mod, "TEACHERS", tmp_path / "teachers")
    monkeypatch.setitem(mod.SOURCES, "digits-05", lambda root: T.subset_dataset(importlib.import_module(
        "tinyset.data").load_dataset("digits"), range(5), name="digits-c0-4"))
    monkeypatch.setitem(mod.PINNED_SSL, "digits-05-bt", mod.PinnedSSL(
        "digits-05", SSLConfig(model="convnet:depth=1,width=8", epochs=1, batch_size=128, proj_dim=32), "test", probe_steps=30))
    return mod


def test_pinned_ssl_teacher_pins_loads_and_checks(pinned, tmp_path):
    import yaml

    from tinyset.errors import TinysetError
    from tinyset.models import get_model as gm, read_checkpoint, sha256_file
    from tinyset.data.base import DatasetInfo

    ds = pinned.PINNED_SSL["digits-05-bt"].dataset("")
    t = pinned.load_pinned_ssl("digits-05-bt", ds, cache=str(tmp_path / "cache"))  # nothing pinned: trains and pins
    st, meta_path = pinned.paths("digits-05-bt")
    meta = yaml.safe_load(meta_path.read_text())
    assert meta["sha256"] == sha256_file(st) and 0 < meta["test_accuracy"] <= 100 and "linear probe" in meta["accuracy"]
    assert t.reference["pinned"] == "digits-05-bt" and t.dim == 8 * 8 * 8
    again = pinned.load_pinned_ssl("digits-05-bt", ds, cache=str(tmp_path / "cache"))
    x = ds.test.get_batch(torch.arange(4))[0]
    assert torch.equal(t.encoder(x), again.encoder(x))
    # what tests/test_pinned.py checks of every committed file holds for this one too: a whole classifier
    ckpt = read_checkpoint(st)
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["dataset_info"].items()
                          if k in DatasetInfo.__dataclass_fields__})
    model = gm(ckpt["model"], info)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    with torch.no_grad():
        xs, ys = ds.test.get_batch(torch.arange(len(ds.test)))
        acc = 100.0 * float((model(xs).argmax(1) == ys).float().mean())
    assert acc == pytest.approx(meta["test_accuracy"], abs=0.01)  # the folded probe head scores what the YAML says
    st.write_bytes(st.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(TinysetError, match="restore it from git or retrain it"):
        pinned.load_pinned_ssl("digits-05-bt", ds, cache=str(tmp_path / "cache"))


@pytest.mark.slow
def test_ssdd_benchmark_smoke_runs_and_resumes(tmp_path):
    env = {**os.environ, "TINYSET_BENCH_RESULTS": str(tmp_path / "results"), "TINYSET_BENCH_WORK": str(tmp_path / "work"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ssdd.py"), "--smoke", "--cache", str(tmp_path / "cache"),
           "--only", "none", "krr_st", "ssdd", "pixels_views", "teacher"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    import json

    rows = {r["method"]: r for r in json.loads((tmp_path / "results" / "ssdd_smoke.json").read_text())["rows"]}
    assert set(rows) == {"none", "krr_st", "ssdd", "pixels_views", "teacher"}
    assert rows["ssdd"]["seeds"] == 2 and rows["ssdd"]["first_loss"] > 0 and rows["ssdd"]["last_loss"] > 0
    assert rows["ssdd"]["approx_error"] is not None and rows["ssdd"]["approx_zero_shift_error"] is not None
    assert rows["krr_st"]["stored_floats"] <= rows["krr_st"]["budget_floats"] and "digits_5_9" in rows["none"]
    assert "finetune_digits_5_9" in rows["krr_st"]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and " seed " not in again.stderr  # every row and seed resumed, nothing recomputed
