"""E2D's reference recovery structure as options (issue 24): Conv2d-input matching with patch
statistics, pooled class targets, the carried statistics EMA, 2-class sub-batches, per-slot draws."""
import pytest
import torch
from torch import nn

from tinyset.config import ConfigError
from tinyset.methods import MethodContext, build_method
from tinyset.methods.base import Unit
from tinyset.methods.bn_matching import (
    BN_STATS_VERSION,
    BNMatcher,
    _conv_moments,
    _ConvMoments,
    bn_statistics,
    cached_bn_targets,
    matched_sites,
)
from tinyset.methods.e2d import ROWS, STATS_STRUCTURES
from tinyset.methods.recovery import RandomCropPolicy
from tinyset.utils.seeding import generator


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)).eval()


def _cell_stats(x: torch.Tensor, patch: int):
    """Pooled channel and patch statistics of ``x`` by plain slicing (an independent check)."""
    h, w = x.shape[-2:]
    u, v = max(1, -(-h // patch)), max(1, -(-w // patch))
    pm, pv = [], []
    for i in range(u):
        for j in range(v):
            cell = x[:, :, i * h // u:(i + 1) * h // u, j * w // v:(j + 1) * w // v]
            pm.append(cell.mean())
            pv.append(cell.var(unbiased=False))
    return {"mean": x.mean((0, 2, 3)), "var": x.var((0, 2, 3), unbiased=False),
            "pmean": torch.stack(pm), "pvar": torch.stack(pv)}


def _inputs_of(net, x, kind):
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].detach())) for m in net.modules() if isinstance(m, kind)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def test_conv_matching_hooks_every_conv_input_with_x10_on_the_first_conv():
    torch.manual_seed(0)
    net = _net()
    x = torch.randn(6, 3, 32, 32)
    for i, m in enumerate([m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]):  # in order: each feeds the next
        t = _inputs_of(net, x, nn.BatchNorm2d)[i]
        m.running_mean.copy_(t.mean((0, 2, 3)))
        m.running_var.copy_(t.var((0, 2, 3), unbiased=False))
    conv_in = _inputs_of(net, x, nn.Conv2d)
    assert [t.shape[-1] for t in conv_in] == [32, 16]  # the raw image, then the pooled map
    targets = [_cell_stats(t, 16) for t in conv_in]
    matcher = BNMatcher(net, 10.0, conv_targets=targets, conv_patch=16)
    assert [k for k, _, _ in matcher.sites] == ["conv", "bn", "conv", "bn"]  # module order, every Conv2d
    assert matcher.weights == [10.0, 1.0, 1.0, 1.0]  # x10 on the first conv (the image), not the first BN
    matcher.start()
    with torch.no_grad():
        net(x)
    assert float(matcher.loss()) < 1e-4  # the batch's own statistics at every site
    y = x.clone()
    y[:, :, :16, :16] += 1.0  # only the image's top-left cell moves: its patch mean does
    matcher.start()
    with torch.no_grad():
        net(y)
    first = float(matcher.losses[0])
    ref = _cell_stats(y, 16)
    expect = sum(float(torch.norm(ref[k] - targets[0][k])) for k in ref)
    assert first == pytest.approx(10.0 * expect, rel=1e-4)
    assert float(torch.norm(ref["pmean"] - targets[0]["pmean"])) > 0.9  # the patch term sees it
    matcher.remove()
    # without conv targets the sites are the BN inputs only: the default structure, x10 on the first BN
    plain = BNMatcher(net)
    assert [k for k, _, _ in plain.sites] == ["bn", "bn"] and plain.weights == [10.0, 1.0]
    plain.remove()


@pytest.mark.parametrize("size,patch,cells", [(32, 16, 4), (16, 16, 1), (8, 16, 1), (24, 16, 4), (32, 8, 16), (32, 0, 0)])
def test_patch_statistics_are_over_patch_cells(size, patch, cells):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, size, size, generator=g)
    m, s, pm, ps = _conv_moments(x, patch)
    assert pm.shape == (3, cells) and ps.shape == (3, cells)
    assert torch.allclose(m, x.mean((2, 3)), atol=1e-6) and torch.allclose(s, (x * x).mean((2, 3)), atol=1e-6)
    if cells:
        ref = _cell_stats(x[:1], patch)  # one image: pooled = per-image
        assert torch.allclose(pm[0], ref["pmean"], atol=1e-5)
        assert torch.allclose(ps[0] - pm[0] ** 2, ref["pvar"], atol=1e-5)
    if size == 32 and patch == 16:  # 16x16 cells, row-major
        assert torch.allclose(pm[:, 1], x[:, :, :16, 16:].mean((1, 2, 3)), atol=1e-6)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("patch", [0, 4, 3])
def test_conv_moments_backward_matches_autograd(fmt, patch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64, generator=g).contiguous(memory_format=fmt).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: _ConvMoments.apply(t, patch), (x,))
    xf = x.detach().float().contiguous(memory_format=fmt).requires_grad_(True)
    m, s, pm, ps = _conv_moments(xf, patch)
    ws = [torch.randn(t.shape, generator=g) for t in (m, s, pm, ps)]
    sum((t * w).sum() for t, w in zip((m, s, pm, ps), ws)).backward()
    assert xf.grad.is_contiguous(memory_format=fmt)
    m, _, pm, _ = _conv_moments(xf, patch)  # unused outputs: their gradients arrive as None
    xf.grad = None
    (m.sum() + pm.sum()).backward()
    assert torch.isfinite(xf.grad).all()


def _batch(ds, classes, per_class=None):
    idx = torch.cat([ds.train.class_indices(c)[:per_class] for c in classes])
    return ds.train.get_batch(idx)


def test_pooled_class_term_uses_statistics_pooled_over_the_batch_labels(digits, digits_teacher):
    t = digits_teacher.model
    stats = bn_statistics(t, digits, torch.device("cpu"), None, progress=False, conv_patch=8)
    conv = [{k: d[k] for k in ("mean", "var", "pmean", "pvar", "class_mean", "class_sq", "class_pmean", "class_psq")}
            for d in stats.conv_stats]
    matcher = BNMatcher(t, class_moments=stats.class_moments, global_targets=stats.global_stats, conv_targets=conv,
                        conv_patch=8)
    x, y = _batch(digits, [3, 7])  # every image of two classes, unequal counts
    matcher.start(y)
    with torch.no_grad():
        t(x)
    assert len(matcher.class_terms) == 6  # three convs and three BNs, each with a class-aware half
    on_real = float(sum(matcher.class_terms))
    assert on_real < 1e-3  # exactly the mixture of its labels, weighted by their counts
    x2, y2 = _batch(digits, [3, 7, 1])  # another label set: the target follows the batch's labels
    matcher.start(y2)
    with torch.no_grad():
        t(x2)
    assert float(sum(matcher.class_terms)) < 1e-3
    matcher.start(torch.full_like(y, 1))  # the same images labelled as another class: far
    with torch.no_grad():
        t(x)
    assert float(sum(matcher.class_terms)) > 1.0
    matcher.remove()
    # the reference's class "variance" (a mean of per-image variances) is out of reach of the same real batch
    slip = [(m, v) for (m, _), (_, v) in zip(stats.class_moments, stats.class_stats)]
    off = BNMatcher(t, class_moments=[(m, v + m * m) for m, v in slip], global_targets=stats.global_stats)
    off.start(y)
    with torch.no_grad():
        t(x)
    assert float(sum(off.class_terms)) > 20 * on_real
    off.remove()


def test_reference_structure_scores_real_images_near_zero_and_noise_far(digits, digits_teacher, tmp_path):
    """The findings' sanity check: real images of a class sit near the floor of the matching term."""
    t = digits_teacher.model
    ctx = MethodContext(dataset=digits, teacher=t, device=torch.device("cpu"), progress=False, cache_dir=tmp_path)
    method = build_method("e2d", {"stats": "reference", "iterations": 2}, ctx)
    (targets,), _ = method.bn_targets(RandomCropPolicy((0.5, 1.0)))
    assert targets.conv_stats is not None and targets.class_moments is not None and targets.global_stats is None
    view = RandomCropPolicy((0.08, 1.0), True)  # the view its class and conv targets were measured under
    g = generator(5)

    def terms(x, y):
        matcher = BNMatcher(t, 10.0, class_moments=targets.class_moments, conv_targets=targets.conv_stats,
                            conv_patch=16)
        matcher.start(y)
        with torch.no_grad():
            t(x)
        conv = float(sum(l for (k, _, _), l in zip(matcher.sites, matcher.losses) if k == "conv"))
        out = float(sum(matcher.class_terms)), conv
        matcher.remove()
        return out

    # under the view the targets were measured under, real images sit at the floor of sampling noise
    # (crops of 0.08-1 of a 16-px digit vary a lot: 10 images leave a visible floor, more shrink it)
    x, y = _batch(digits, [4], 10)  # one class, 10 slots: the reference's sub-batch per class
    real_cls, real_conv = terms(view.sample_view(x, g), y)
    noise_cls, noise_conv = terms(view.sample_view(torch.rand_like(x), g), y)
    assert real_cls < 0.3 * noise_cls and real_conv < 0.3 * noise_conv
    x, y = _batch(digits, [4, 7])  # two whole classes
    whole_cls, whole_conv = terms(view.sample_view(x, g), y)
    assert whole_cls < 0.1 * noise_cls and whole_conv < 0.25 * noise_conv
    assert whole_cls < real_cls


def test_stats_ema_is_carried_across_units_only_when_asked():
    net = _net()
    a, b = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8) * 2 + 1
    ma, mb = (_inputs_of(net, t, nn.BatchNorm2d)[0].mean((0, 2, 3)) for t in (a, b))
    state: dict = {}
    first = BNMatcher(net, ema_momentum=0.8, ema_state=state)
    first.start()
    with torch.no_grad():
        net(a)
    first.remove()
    assert torch.allclose(state[0]["mean"], ma, atol=1e-6)  # the EMA starts at the first batch (not at 0)
    state[0]["cmean"] = torch.zeros(1)  # a per-class EMA belongs to one unit's classes: dropped
    second = BNMatcher(net, ema_momentum=0.8, ema_state=state)
    assert "cmean" not in state[0]
    second.start()
    with torch.no_grad():
        net(b)
    second.remove()
    assert torch.allclose(state[0]["mean"], 0.8 * ma + 0.2 * mb, atol=1e-6)  # carried, not restarted
    fresh = BNMatcher(net, ema_momentum=0.8)
    fresh.start()
    with torch.no_grad():
        net(b)
    assert torch.allclose(fresh._ema[0]["mean"], mb, atol=1e-6)
    fresh.remove()


def test_e2d_carries_the_ema_between_units_only_with_persist(digits, digits_teacher, tmp_path):
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False,
                        cache_dir=tmp_path)
    for persist in (False, True):
        m = build_method("e2d", {"iterations": 2, "batch_size": 4, "classes_per_batch": 2, "stats_ema_persist": persist},
                         ctx)
        units = m.plan(2)[:2]
        stats = [m.run_unit(u, generator(i)).stats for i, u in enumerate(units)]
        if persist:
            assert [s["stats_ema_carried_in"] for s in stats] == [False, True]
            assert m.ema_states()[0]  # one state per teacher, filled by the units
        else:
            assert m.ema_states() is None and "stats_ema_carried_in" not in stats[0]


def test_classes_per_batch_gives_the_reference_sub_batch(digits, digits_teacher):
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False)
    default = build_method("e2d", {"batch_size": 20}, ctx).plan(10)
    assert {(len(u.classes), u.per_class) for u in default} == {(10, 2)}  # tinyset: all classes x 2 slots
    ref = build_method("e2d", {"batch_size": 20, "classes_per_batch": 2}, ctx).plan(10)
    assert len(ref) == 5 and {(len(u.classes), u.per_class) for u in ref} == {(2, 10)}  # 2 classes x 10 slots
    assert [u.classes for u in ref] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    more = build_method("e2d", {"batch_size": 20, "classes_per_batch": 2}, ctx).plan(25)
    assert [u.per_class for u in more[:3]] == [10, 10, 5]  # IPC above 10: blocks of 10 slots per class pair


def test_reference_init_draws_per_slot_with_repeats_and_flips(digits, digits_teacher):
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False)
    unit = Unit((2,), 0, 60)
    pool = len(digits.train.class_indices(2))
    distinct = build_method("e2d", {}, ctx)
    _, src = distinct._init_images(unit, generator(0))
    assert len(set(src)) == 60 <= pool
    ref = build_method("e2d", {"init_sampling": "independent", "init_flip": True}, ctx)
    x, src = ref._init_images(unit, generator(0))
    assert len(set(src)) < 60  # 60 independent draws from ~180 images repeat (p > 0.99)
    real, _ = digits.train.get_batch(torch.tensor(src))
    same = (x == real).flatten(1).all(1)
    mirrored = (x == real.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 50 and int((~same).sum()) > 0


def test_stats_reference_is_one_switch_and_each_piece_overridable(digits, digits_teacher):
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False)
    cfg = build_method("e2d", {"stats": "reference"}, ctx).cfg
    for k, v in STATS_STRUCTURES["reference"].items():
        assert getattr(cfg, k) == v, k
    assert ROWS["e2d_reference"] == ("e2d", {"stats": "reference"})
    over = build_method("e2d", {"stats": "reference", "batch_size": 100, "class_target": "per_image"}, ctx).cfg
    assert over.batch_size == 100 and over.class_target == "per_image" and over.match_conv  # explicit keys win
    plain = build_method("e2d", {}, ctx).cfg
    for k, v in STATS_STRUCTURES["default"].items():
        assert getattr(plain, k) == v, k  # the "default" bundle is the defaults
    with pytest.raises(ConfigError, match="stats"):
        build_method("e2d", {"stats": "referense"}, ctx)


def test_cache_key_separates_every_target_structure(digits, digits_teacher, tmp_path):
    t, dev = digits_teacher.model, torch.device("cpu")
    crop = RandomCropPolicy((0.08, 1.0), True)
    kinds = [{}, {"conv_patch": 16}, {"conv_patch": 8}, {"class_target": "pooled"},
             {"conv_patch": 16, "class_target": "pooled"}]
    for kw in kinds:
        tg, secs = cached_bn_targets(t, digits, dev, tmp_path, "view", crop.sample_view, crop.spec(), progress=False, **kw)
        assert secs > 0  # a new structure: a new file, never another structure's
        assert (tg.conv_stats is not None) == ("conv_patch" in kw)
        assert (tg.class_moments is not None) == (kw.get("class_target") == "pooled")
        assert (tg.class_stats is not None) == (kw.get("class_target") != "pooled")
        _, again = cached_bn_targets(t, digits, dev, tmp_path, "view", crop.sample_view, crop.spec(), progress=False, **kw)
        assert again == 0.0
    assert len(list(tmp_path.glob(f"bn_stats_v{BN_STATS_VERSION}_*.pt"))) == len(kinds)
    # "crop" reads the same file as "view" under the same view: running statistics for the global BN term
    tg, secs = cached_bn_targets(t, digits, dev, tmp_path, "crop", crop.sample_view, crop.spec(), progress=False,
                                 conv_patch=16, class_target="pooled")
    assert secs == 0.0 and tg.global_stats is None and tg.conv_stats[0]["mean"].shape == (1,)
    # the in-run cache of a method keys on the options too
    ctx = MethodContext(dataset=digits, teacher=t, device=dev, progress=False, cache_dir=tmp_path)
    m = build_method("e2d", {}, ctx)
    policy = RandomCropPolicy((0.5, 1.0))
    a, _ = m.bn_targets(policy)
    m.cfg.match_conv = True
    b, _ = m.bn_targets(policy)
    assert a[0].conv_stats is None and b[0].conv_stats is not None


def test_reference_e2d_runs_end_to_end(digits, digits_teacher, tmp_path):
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False,
                        cache_dir=tmp_path)
    m = build_method("e2d", {"stats": "reference", "iterations": 6, "explore_fraction": 0.5}, ctx)
    units = m.plan(2)
    assert {(len(u.classes), u.per_class) for u in units} == {(2, 2)}
    res = [m.run_unit(u, generator(i)) for i, u in enumerate(units[:2])]
    for r in res:
        assert torch.isfinite(r.images).all() and r.images.min() >= 0 and r.images.max() <= 1
    assert res[0].stats["class_stats_seconds"] > 0 and res[1].stats["class_stats_seconds"] == 0.0
    assert res[1].stats["stats_ema_carried_in"]
    assert m.resolved_config()["stats"] == "reference" and m.resolved_config()["match_conv"] is True


def test_matched_sites_follow_module_order():
    net = _net()
    assert [k for k, _, _ in matched_sites(net, True)] == ["conv", "bn", "conv", "bn"]
    assert [k for k, _, _ in matched_sites(net, False)] == ["bn", "bn"]


def test_conv_matching_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    net = _net()
    x = torch.randn(8, 3, 32, 32)
    targets = [_cell_stats(t, 16) for t in _inputs_of(net, x * 0.5, nn.Conv2d)]
    moments = [(torch.zeros(3, b.num_features), torch.ones(3, b.num_features))
               for b in net.modules() if isinstance(b, nn.BatchNorm2d)]
    for k, t in enumerate(targets):
        targets[k] = {**t, "class_mean": t["mean"].expand(3, -1), "class_sq": (t["var"] + t["mean"] ** 2).expand(3, -1),
                      "class_pmean": t["pmean"].expand(3, -1), "class_psq": (t["pvar"] + t["pmean"] ** 2).expand(3, -1)}
    y = torch.arange(8) % 3
    out = []
    for amp in (False, True):
        matcher = BNMatcher(net, class_moments=moments, conv_targets=targets, conv_patch=16)
        matcher.start(y)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            net(x)
        loss = matcher.loss()
        matcher.remove()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        out.append(float(loss))
    assert out[1] == pytest.approx(out[0], rel=0.05)  # only the bf16 convolutions differ
