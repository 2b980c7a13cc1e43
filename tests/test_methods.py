"""Every method on the bundled digits set: shapes, determinism, class sharding, early stop."""
import pytest
import torch

from tinyset.config import RunConfig
from tinyset.methods import METHODS
from tinyset.jobs.distill import synthesize

FAST = {
    "sre2l": {"iterations": 6, "batch_size": 20},
    "e2d": {"iterations": 10, "batch_size": 20, "confident_pool": 3},
    "rded": {"pool": 20, "crops": 2},
    "herding": {"pool": 50},
    "random": {},
    "dm": {"iterations": 3, "batch_real": 8},
}


def _cfg(method, ipc=2, **args):
    cfg = RunConfig(method=method, ipc=ipc, device="cpu")
    cfg.method_args = {**FAST.get(method, {}), **args}
    return cfg


def test_every_registered_method_has_fast_settings():
    # whole-set self-supervised methods (krr_st, ssdd, ssl_random) have no units; tests/test_ssdd.py covers them
    unit_methods = {n for n in METHODS.names() if not getattr(METHODS.get(n), "self_supervised", False)}
    assert unit_methods <= set(FAST)


@pytest.mark.parametrize("method", sorted(FAST))
def test_method_makes_valid_class_major_sets(method, digits, digits_teacher):
    x, y, summary = synthesize(_cfg(method), digits, digits_teacher, None, progress=False)
    assert x.shape == (20, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(y, torch.arange(10).repeat_interleave(2))
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert summary["seconds"] >= 0 and "units" in summary


@pytest.mark.parametrize("method", ["e2d", "rded", "random"])
def test_same_seed_same_set_and_class_shards_match(method, digits, digits_teacher):
    cfg = _cfg(method)
    x1, y1, _ = synthesize(cfg, digits, digits_teacher, None, progress=False)
    x2, _, _ = synthesize(cfg, digits, digits_teacher, None, progress=False)
    assert torch.equal(x1, x2)
    # e2d's units hold 10 classes (batch 20 / ipc 2); a shard of whole units reproduces them
    shard = list(range(10)) if method == "e2d" else [3, 7]
    xs, ys, _ = synthesize(cfg, digits, digits_teacher, None, progress=False, classes=shard)
    mask = torch.isin(y1, torch.tensor(shard))
    assert torch.equal(xs, x1[mask]) and torch.equal(ys, y1[mask])
    cfg.seed = 1
    x3, _, _ = synthesize(cfg, digits, digits_teacher, None, progress=False)
    assert not torch.equal(x1, x3)


def test_e2d_class_groups_shard_exactly(digits, digits_teacher):
    cfg = _cfg("e2d", batch_size=4)  # units of 4 classes x 1 slot: class groups 0-3, 4-7, 8-9
    full, y, _ = synthesize(cfg, digits, digits_teacher, None, progress=False)
    part, _, _ = synthesize(cfg, digits, digits_teacher, None, progress=False, classes=[4, 5, 6, 7])
    assert torch.equal(part, full[(y >= 4) & (y <= 7)])


def test_e2d_starts_from_real_images_and_stops_early(digits, digits_teacher):
    # with eps above every loss nothing is remembered, so exploitation ends at once
    cfg = _cfg("e2d", iterations=20, explore_fraction=0.5, eps=100.0)
    _, _, summary = synthesize(cfg, digits, digits_teacher, None, progress=False)
    assert summary["iterations_run"] == 10 and summary["iterations_saved"] == 10
    cfg = _cfg("e2d", iterations=0)  # zero steps: the set is exactly the real starting images
    x, y, summary = synthesize(cfg, digits, digits_teacher, None, progress=False)
    real, _ = digits.train.get_batch(torch.arange(len(digits.train)))
    gap = (x.flatten(1)[:, None] - real.flatten(1)[None]).abs().amax(2).min(1).values
    assert float(gap.max()) < 1e-6  # exact up to the normalise-denormalise round trip


def test_e2d_noise_init_and_no_memory_ablations_run(digits, digits_teacher):
    for args in ({"init": "noise"}, {"memory": False}):
        x, _, s = synthesize(_cfg("e2d", **args), digits, digits_teacher, None, progress=False)
        assert torch.isfinite(x).all() and s["iterations_run"] == 10


def test_recovery_lowers_teacher_loss(digits, digits_teacher):
    """SRe2L's loop must actually invert the teacher: CE of noise starts falls with iterations."""
    def ce_after(iters):
        x, y, _ = synthesize(_cfg("sre2l", iterations=iters, batch_size=20), digits, digits_teacher, None, progress=False)
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(digits_teacher.model(x), y))
    assert ce_after(60) < 0.5 * ce_after(1)


def test_several_teachers_are_used_in_turn(digits, digits_teacher, small_teacher_cfg):
    import dataclasses

    cfg = _cfg("sre2l", iterations=4, batch_size=20)
    one, _, s1 = synthesize(cfg, digits, digits_teacher, None, progress=False)
    cfg.teacher = dataclasses.replace(small_teacher_cfg, extra=(digits_teacher.reference["path"],))
    two, _, s2 = synthesize(cfg, digits, digits_teacher, None, progress=False)
    assert s2["teacher_backward_images"] == s1["teacher_backward_images"] == 4 * 20
    assert torch.allclose(one, two, atol=1e-3)  # the "second" teacher is the same network (memory format aside)
    cfg.teacher = dataclasses.replace(small_teacher_cfg, extra=("convnet:depth=2,width=16",))
    three, _, _ = synthesize(cfg, digits, digits_teacher, None, progress=False)
    assert not torch.equal(one, three)
