"""Quantization in the loop: DM and the recovery loop store codes that decode to exactly what
they optimised; units merge; interrupted runs resume; diversity selection."""

import pytest
import torch

from tinyset.artifact import load_artifact
from tinyset.config import RunConfig
from tinyset.errors import TinysetError
from tinyset.methods.diverse import graph_cut_select
from tinyset.jobs.distill import distill, synthesize


def _dm_cfg(**q):
    cfg = RunConfig(method="dm", ipc=2, evaluate=False)
    cfg.method_args = {"iterations": 4, "batch_real": 8, "quantizer": q}
    return cfg


def test_dm_quadd_artifact_and_resume(tmp_path, digits):
    cfg = _dm_cfg(name="apot", bits=3)
    res = distill(cfg, tmp_path / "q", progress=False)
    art = load_artifact(res.path)
    m = art.manifest
    assert m["format_version"] == 2 and m["decoder"]["name"] == "quantized"
    assert m["decoder"]["config"]["quantizer"]["name"] == "apot" and m["components"]["codes"]["bits"] == 3
    assert art.images.shape == (20, 1, 16, 16) and art.labels.tolist() == [c for c in range(10) for _ in range(2)]
    # the decoded set is made of at most 7 signed-APoT levels per channel (one alpha per set)
    assert torch.unique(art.images).numel() <= 7
    assert m["total_bytes"] == 20 * 256 * 3 // 8 + 4 + (20 * 4 + 7) // 8
    assert (res.path / "preview.png").is_file()
    # a unit cache from an interrupted run gives the same set
    partial = tmp_path / "part"
    partial.mkdir()
    x1, y1, s1 = synthesize(cfg, digits, None, partial, progress=False)
    x2, y2, s2 = synthesize(cfg, digits, None, partial, progress=False)
    assert s2["units"][0].get("resumed") and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1, art.images)
    q1, q2 = s1["_quantized"], s2["_quantized"]
    assert all(torch.equal(q1[0][k], q2[0][k]) for k in q1[0])


def test_dm_quantizer_learns_and_plain_dm_is_float(tmp_path, digits):
    cfg = _dm_cfg(name="uniform", bits=2, granularity="channel", lr=0.05)
    _, _, s = synthesize(cfg, digits, None, None, progress=False)
    comps = s["_quantized"][0]
    lo, hi = comps["q.lo"].flatten(), comps["q.hi"].flatten()
    assert not (torch.equal(lo, torch.zeros(1)) and torch.equal(hi, torch.ones(1)))  # moved off the [0, 1] init
    plain = _dm_cfg()
    x, _, s = synthesize(plain, digits, None, None, progress=False)
    assert "_quantized" not in s and x.min() >= 0 and x.max() <= 1 and torch.unique(x).numel() > 16


def test_recovery_quadd_merges_units(tmp_path, digits, digits_teacher, small_teacher_cfg):
    cfg = RunConfig(method="e2d", ipc=2, evaluate=False, teacher=small_teacher_cfg)
    cfg.method_args = {"iterations": 3, "batch_size": 8, "class_stats": False, "quantizer": {"name": "uniform", "bits": 2}}
    res = distill(cfg, tmp_path / "e2d", progress=False)
    art = load_artifact(res.path)
    units = res.manifest["synthesis"]["units"]
    assert len(units) > 1  # several units, one clip range per image, merged into one set
    assert art.manifest["decoder"]["config"]["quantizer"]["granularity"] == "image"
    assert art.tensors["q.lo"].shape == (20, 1, 1, 1)
    for i in range(20):  # each image holds at most 4 levels
        assert torch.unique(art.images[i]).numel() <= 4
    cfg.method_args["quantizer"]["granularity"] = "tensor"
    with pytest.raises(TinysetError, match="granularity=image"):
        distill(cfg, tmp_path / "e2d-tensor", progress=False)


def test_graph_cut_prefers_diverse_samples():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    feats = torch.stack([a, a, a, a, b, (a + b) / 2 ** 0.5])
    picked = graph_cut_select(feats, 2, lam=1.0).tolist()
    assert len(set(picked)) == 2 and not set(picked) <= {0, 1, 2, 3}  # not two copies of A
    assert graph_cut_select(feats, 2, lam=1.0).tolist() == picked  # deterministic


def test_dm_diverse_init_runs(digits):
    cfg = _dm_cfg(name="uniform", bits=3)
    cfg.method_args.update(init="diverse", diverse_pool=4, iterations=1)
    x, y, _ = synthesize(cfg, digits, None, None, progress=False)
    assert x.shape == (20, 1, 16, 16)


def test_channels_last_latent_encodes_to_a_cacheable_unit(tmp_path):
    """The recovery loop's latent is channels_last; its unit cache (safetensors) needs C order."""
    from safetensors.torch import save_file

    from tinyset.data.base import DatasetInfo
    from tinyset.quant.inloop import LoopQuantizer, QuantizerConfig, encoded_to_tensors

    info = DatasetInfo("t", 2, ("a", "b"), (3, 8, 8), (0.5,) * 3, (0.2,) * 3)
    x = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    lq = LoopQuantizer(QuantizerConfig(name="uniform", bits=2, granularity="image"), x, info)
    tensors, _ = encoded_to_tensors(lq.encoded(lq.latent(x)))
    save_file(tensors, str(tmp_path / "unit.safetensors"))


def test_loop_clip_calibrated_on_mse_is_post_hocs_clip_and_freeze_keeps_it(digits):
    """``calibrate`` starts the loop from the clip post-hoc compression ends with (one shared
    routine); ``freeze`` keeps it through the loop while the codes still learn."""
    from types import SimpleNamespace

    from tinyset.jobs.compress import CompressConfig, quantize_set
    from tinyset.quant.inloop import LoopQuantizer, QuantizerConfig

    x = digits.train.get_batch(torch.arange(40))[0]
    info = SimpleNamespace(kind="image", mean=(0.5,), std=(0.5,))
    _, comps = quantize_set(x, torch.zeros(40, dtype=torch.long), info,
                            CompressConfig(quantizer="uniform", bits=2, calibrate_steps=30), 10)
    lq = LoopQuantizer(QuantizerConfig(name="uniform", bits=2, calibrate=30), x, info)
    assert torch.equal(lq.q.lo.detach(), comps[0]["q.lo"]) and torch.equal(lq.q.hi.detach(), comps[0]["q.hi"])
    start = LoopQuantizer(QuantizerConfig(name="uniform", bits=2), x, info)
    assert not torch.equal(start.q.lo, lq.q.lo)  # calibration moved the clip off the data's range

    def clip(iterations, **q):
        cfg = _dm_cfg(name="uniform", bits=2, lr=0.05, calibrate=30, **q)
        cfg.method_args["iterations"] = iterations
        x, _, s = synthesize(cfg, digits, None, None, progress=False)
        return s["_quantized"][0]["q.lo"], s["_quantized"][0]["q.hi"], x

    lo1, hi1, _ = clip(1, freeze=True)
    lo4, hi4, x4 = clip(4, freeze=True)
    assert torch.equal(lo1, lo4) and torch.equal(hi1, hi4)  # frozen: the calibrated clip, whatever the loop does
    _, _, x1 = clip(1, freeze=True)
    assert not torch.equal(x1, x4)  # ... while the codes learn
    lo4m, hi4m, _ = clip(4)
    assert not (torch.equal(lo4m, lo4) and torch.equal(hi4m, hi4))  # unfrozen, the loop moves it
    with pytest.raises(TinysetError, match="calibrate must be >= 0"):
        LoopQuantizer(QuantizerConfig(name="uniform", bits=2, calibrate=-1), x, info)
