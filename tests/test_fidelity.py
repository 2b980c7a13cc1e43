"""Fidelity of the recovery loop (issue 11): BN targets under the loop's own view, the
straight-through statistics EMA, per-teacher statistics, reproducible teachers, many-class plans."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from tinyset.config import DataConfig, RunConfig, TeacherConfig
from tinyset.data import load_dataset
from tinyset.methods import MethodContext, build_method
from tinyset.methods.bn_matching import BN_STATS_VERSION, BNMatcher, cached_bn_targets
from tinyset.methods.recovery import RandomCropPolicy
from tinyset.models import get_model
from tinyset.jobs.distill import synthesize
from tinyset.teachers.supervised import Teacher, get_extra_teachers, get_teacher
from tinyset.utils.seeding import generator


def _real_batch_terms(teacher, ds, targets, policy, batches=6, per_class=10):
    """The BN term (global + class) of balanced real batches under ``policy``'s view."""
    matcher = BNMatcher(teacher, class_targets=targets.class_stats, global_targets=targets.global_stats)
    g = generator(123)
    vals = []
    for _ in range(batches):
        idx = torch.cat([ds.train.class_indices(c)[torch.randperm(len(ds.train.class_indices(c)), generator=g)[:per_class]]
                         for c in range(ds.info.num_classes)])
        x, y = ds.train.get_batch(idx)
        matcher.start(y)
        with torch.no_grad():
            teacher(policy.sample_view(x, g))
        vals.append(float(matcher.loss()))
    matcher.remove()
    return sum(vals) / len(vals)


def test_real_batches_under_the_loops_view_sit_at_the_floor_of_the_bn_term(digits, digits_teacher, tmp_path):
    policy = RandomCropPolicy((0.5, 1.0), True)
    t = digits_teacher.model
    view, _ = cached_bn_targets(t, digits, torch.device("cpu"), tmp_path, "view", policy.sample_view, policy.spec(),
                                progress=False)
    old, _ = cached_bn_targets(t, digits, torch.device("cpu"), tmp_path, "teacher", progress=False)
    on_view = _real_batch_terms(t, digits, view, policy)
    on_old = _real_batch_terms(t, digits, old, policy)
    assert on_view < 0.5 * on_old  # the old convention puts real data far from its targets
    # at the floor: moving the targets either way (5% of each layer's spread) only raises the term
    for sign in (1.0, -1.0):
        moved = dataclasses.replace(view, global_stats=[(m + sign * 0.05 * v.sqrt(), v) for m, v in view.global_stats],
                                    class_stats=[(m + sign * 0.05 * v.sqrt(), v) for m, v in view.class_stats])
        assert _real_batch_terms(t, digits, moved, policy) > on_view
    # cached under a versioned key of the view: a second call computes nothing
    _, secs = cached_bn_targets(t, digits, torch.device("cpu"), tmp_path, "view", policy.sample_view, policy.spec(),
                                progress=False)
    assert secs == 0.0 and all(p.name.startswith(f"bn_stats_v{BN_STATS_VERSION}_") for p in tmp_path.glob("*.pt"))
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_stats_ema_is_straight_through():
    """Value = the EMA, gradient = the current batch's with weight 1 (not 1 - momentum)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    matcher = BNMatcher(net, ema_momentum=0.8)
    first = torch.ones(4) * 2.0
    matcher._smooth(0, "mean", first)
    cur = torch.zeros(4, requires_grad=True)
    out = matcher._smooth(0, "mean", cur)
    assert torch.allclose(out, torch.full((4,), 1.6))  # 0.8 * 2 + 0.2 * 0
    out.sum().backward()
    assert torch.equal(cur.grad, torch.ones(4))
    matcher.remove()


def test_extra_teacher_of_another_architecture_uses_its_own_statistics(digits, digits_teacher, small_teacher_cfg):
    tcfg = dataclasses.replace(small_teacher_cfg, extra=("convnet:depth=2,width=16",))
    extra = get_extra_teachers(digits, tcfg, "cpu", progress=False)
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False,
                        cache_dir=digits_teacher.directory, teachers=[e.model for e in extra],
                        teacher_dirs=[e.directory for e in extra])
    method = build_method("e2d", {"iterations": 4, "batch_size": 20}, ctx)
    policy = RandomCropPolicy((0.5, 1.0))
    targets, _ = method.bn_targets(policy)
    widths = [[m.shape[-1] for m, _ in tg.class_stats] for tg in targets]
    assert widths == [[32, 32, 32], [16, 16]]
    # the extra teacher's class statistics are its own (measured through it), not the main one's
    own, _ = cached_bn_targets(extra[0].model, digits, torch.device("cpu"), extra[0].directory, "view",
                               policy.sample_view, policy.spec(), progress=False)
    assert torch.equal(targets[1].class_stats[0][0], own.class_stats[0][0])
    unit = method.plan(2)[0]
    res = method.run_unit(unit, generator(0))  # runs with both teachers in turn, no shape error
    assert torch.isfinite(res.images).all()


def test_extra_teacher_of_the_main_architecture_gets_its_own_seed(digits, small_teacher_cfg):
    tcfg = dataclasses.replace(small_teacher_cfg, model="convnet:depth=2,width=8", epochs=1, extra=("convnet:depth=2,width=8",))
    main = get_teacher(digits, tcfg, "cpu", progress=False)
    (extra,) = get_extra_teachers(digits, tcfg, "cpu", progress=False)
    assert extra.reference["seed"] != main.reference["seed"] and extra.directory != main.directory
    a = dict(main.model.named_parameters())
    b = dict(extra.model.named_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_empty_cache_run_equals_cached_rerun_bit_for_bit(digits, tmp_path):
    """The teacher trained in-process and the one loaded from the cache give the same images."""
    tcfg = TeacherConfig(model="convnet:depth=2,width=16", epochs=1, batch_size=128, cache_dir=str(tmp_path))
    cfg = RunConfig(method="e2d", ipc=2, device="cpu", teacher=tcfg)
    cfg.method_args = {"iterations": 6, "batch_size": 20}
    runs = []
    for _ in range(2):  # first: trains the teacher (empty cache); second: loads it
        teacher = get_teacher(digits, tcfg, "cpu", progress=False)
        assert all(p.is_contiguous() for p in teacher.model.parameters())
        x, _, _ = synthesize(cfg, digits, teacher, None, progress=False)
        runs.append(x)
    assert torch.equal(runs[0], runs[1])


def _many_classes(tmp_path, k):
    rng = np.random.default_rng(0)
    path = tmp_path / f"k{k}.npz"
    y = np.arange(k).repeat(2)
    np.savez(path, x_train=rng.integers(0, 256, (len(y), 8, 8, 3), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (k, 8, 8, 3), dtype=np.uint8), y_test=np.arange(k))
    return load_dataset(f"npz:{path}", DataConfig(dataset=f"npz:{path}"))


@pytest.mark.parametrize("k", [100, 1000])
def test_many_class_plans_use_short_unit_files_and_resume(tmp_path, k):
    ds = _many_classes(tmp_path, k)
    torch.manual_seed(0)
    model = get_model("convnet:depth=1,width=8", ds.info).eval()
    teacher = Teacher(model, {"source": "test"}, tmp_path / "tdir")
    cfg = RunConfig(method="e2d", ipc=1, device="cpu")
    cfg.method_args = {"iterations": 2}
    partial = tmp_path / "partial"
    partial.mkdir()
    x, y, summary = synthesize(cfg, ds, teacher, partial, progress=False)
    files = sorted(p.name for p in partial.glob("unit_*.safetensors"))
    assert len(files) == k // 100 and "unit_c0-99_s0-1.safetensors" in files
    assert max(len(f) for f in files) < 40
    side = json.loads((partial / "unit_c0-99_s0-1.json").read_text())
    assert side["unit_classes"] == list(range(100))  # the full list lives inside the file
    assert torch.equal(y, torch.arange(k))
    x2, _, summary2 = synthesize(cfg, ds, teacher, partial, progress=False)
    assert torch.equal(x, x2) and all(u.get("resumed") for u in summary2["units"])


def test_synthesis_seeds_pair_a_fresh_set_with_each_eval_seed(digits, tmp_path):
    from tinyset.jobs.distill import distill, evaluate_run

    cfg = RunConfig(method="random", ipc=1, device="cpu", evaluate=False)
    cfg.teacher = dataclasses.replace(cfg.teacher, cache_dir=str(tmp_path / "c"))
    cfg.eval = dataclasses.replace(cfg.eval, epochs=1, seeds=3, label_modes=("hard",), random_baseline=False,
                                   synthesis_seeds=True)
    distill(cfg, tmp_path / "run", progress=False)
    report = evaluate_run(tmp_path / "run", cfg, digits, None, progress=False)
    assert report["synthesis_seeds"] == [0, 1, 2] and "re-synthesises" in report["variance"]
    assert "Variance:" in (tmp_path / "run" / "eval.md").read_text()
    made = []
    x0, y0 = digits.train.get_batch(torch.arange(10))

    def resynth(run_seed):
        x, y, _ = synthesize(dataclasses.replace(cfg, seed=run_seed), digits, None, None, progress=False)
        made.append(x)
        return x, y

    from tinyset.eval.protocol import evaluate_set

    evaluate_set(x0, y0, digits, None, cfg.eval, "cpu", seed=5, progress=False, resynthesize=resynth)
    assert len(made) == 2 and not torch.equal(made[0], made[1])  # seeds 6 and 7, each a new set


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 8.0])
def test_dkd_float32_is_within_1e5_relative_of_float64(T):
    from tinyset.kd.losses import dkd_terms

    g = torch.Generator().manual_seed(int(T))
    for scale in (1.0, 3.0, 10.0, 30.0):
        s, t = torch.randn(64, 10, generator=g) * scale, torch.randn(64, 10, generator=g) * scale
        y = torch.randint(0, 10, (64,), generator=g)
        for lo, hi in zip(dkd_terms(s, t, y, T), dkd_terms(s.double(), t.double(), y, T)):
            assert abs(float(lo.double().sum() - hi.sum())) <= 1e-5 * float(hi.sum())


def test_mixup_with_alpha_not_one_is_seeded_and_he_da_mixup_uses_reference_alpha():
    from tinyset.data.augment import mixup
    from tinyset.kd.he_da import DEFAULT_ALPHA

    x = torch.rand(8, 3, 4, 4)
    a = mixup(x, 0.2, torch.Generator().manual_seed(3))
    b = mixup(x, 0.2, torch.Generator().manual_seed(3))
    c = mixup(x, 0.2, torch.Generator().manual_seed(4))
    assert a[2] == b[2] and torch.equal(a[0], b[0]) and a[2] != c[2]
    assert DEFAULT_ALPHA == {"cutmix": 1.0, "mixup": 0.2}


def test_energy_reference_threshold_rule_matches_the_strict_order_statistics():
    from tinyset.kd.energy import energy_groups, energy_thresholds

    e = torch.randn(1003, generator=torch.Generator().manual_seed(0))
    s = torch.sort(e).values
    low, high = energy_thresholds(e, 0.2, 0.2, rule="reference")
    groups = energy_groups(e, low, high)
    k = int(1003 * 0.2)  # 200: truncated, where the default rule rounds to 201
    assert torch.equal(groups == 0, e < s[k]) and torch.equal(groups == 2, e > s[1003 - 1 - k])
    assert int((groups == 0).sum()) == k
    low_t, _ = energy_thresholds(e, 0.2, 0.2)
    assert int((energy_groups(e, low_t, high) == 0).sum()) == 201


def test_rded_crops_are_square_and_scored_zero_padded(digits, digits_teacher):
    from tinyset.methods.rded import RDEDConfig

    assert tuple(RDEDConfig().crop_ratio) == (1.0, 1.0)
    ctx = MethodContext(dataset=digits, teacher=digits_teacher.model, device=torch.device("cpu"), progress=False)
    m = build_method("rded", {"factor": 2, "pool": 8, "crops": 2}, ctx)
    crops = torch.rand(3, 1, 8, 8)
    view = m._score_view(crops)
    mean = digits.info.mean[0]
    assert view.shape == (3, 1, 16, 16) and torch.equal(view[:, :, 4:12, 4:12], crops)
    assert torch.allclose(view[:, :, :4], torch.full((3, 1, 4, 16), mean))
    x = m.run_unit(m.plan(1)[0], generator(0)).images
    assert x.shape == (1, 1, 16, 16)
