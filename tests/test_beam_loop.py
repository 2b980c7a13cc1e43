"""A beam loop that learns (issue 22, item 4): the quantizer works in normalised units on vectors
(raw dBm clips barely moved at lr 0.01), DM's lr is in units of the data's std there, both recorded;
inputs at 3GPP's L1-RSRP reporting grid (7 bits, 1 dB); class balance."""
from __future__ import annotations

import torch

from tinyset.artifact import load_artifact
from tinyset.config import RunConfig
from tinyset.data import load_dataset
from tinyset.data.beam import BeamConfig, class_balance, generate, rsrp_from_report, rsrp_report
from tinyset.jobs.distill import distill, synthesize
from tinyset.quant.inloop import LoopQuantizer, QuantizerConfig

BEAM = "beam:n_train=600,n_test=100"


def test_rsrp_reporting_grid():
    # TS 38.133 Table 10.1.6.1-1: RSRP_r covers [r - 157, r - 156) dBm; the L1 range clips to RSRP_16..RSRP_113
    v = torch.tensor([-200.0, -140.5, -140.0, -139.01, -80.3, -45.0, -44.0, -10.0])
    r = rsrp_report(v)
    assert r.tolist() == [16, 16, 17, 17, 76, 112, 113, 113]
    assert (r < 2 ** 7).all()  # 7 bits
    assert rsrp_from_report(r).tolist() == [-140.5, -140.5, -139.5, -139.5, -80.5, -44.5, -43.5, -43.5]
    cfg = BeamConfig(report="3gpp")
    x, _ = generate(cfg, 200, torch.Generator().manual_seed(0))
    xf, _ = generate(BeamConfig(), 200, torch.Generator().manual_seed(0))
    assert torch.equal(x, rsrp_from_report(rsrp_report(xf)))  # the same users, reported
    assert torch.equal(x - torch.floor(x), torch.full_like(x, 0.5))  # every value on the 1 dB grid
    ds = load_dataset("beam:n_train=50,n_test=10,report=3gpp")
    assert "report=3gpp" in ds.info.name


def test_class_balance():
    b = class_balance(torch.tensor([0, 0, 0, 1, 2, 2]), 4)
    assert b["counts"] == [3, 1, 2, 0] and b["min"] == 0 and b["max"] == 3 and b["empty_classes"] == 1
    assert b["majority_accuracy"] == 50.0 and 0 < b["normalized_entropy"] < 1
    assert class_balance(torch.arange(4), 4)["normalized_entropy"] == 1.0


def test_vectors_quantize_in_normalised_units_by_default():
    ds = load_dataset(BEAM)
    x = ds.train.x[:40]
    lq = LoopQuantizer(QuantizerConfig(name="uniform", bits=2, granularity="channel"), x, ds.info)
    assert lq.space.mean is not None  # auto: normalised units for vectors
    img = load_dataset("digits")
    lqi = LoopQuantizer(QuantizerConfig(name="uniform", bits=2), img.train.get_batch(torch.arange(8))[0], img.info)
    assert lqi.space.mean is None  # unsigned on images: [0, 1] pixels, as before
    raw = LoopQuantizer(QuantizerConfig(name="uniform", bits=2, space="pixels"), x, ds.info)
    assert raw.space.mean is None  # still available when asked for


def _dm(iterations: int, **q):
    cfg = RunConfig(method="dm", ipc=2, evaluate=False)
    cfg.data.dataset = BEAM
    cfg.method_args = {"iterations": iterations, "batch_real": 8,
                       "quantizer": {"name": "uniform", "bits": 2, "granularity": "channel", **q}}
    return cfg


def _clips(cfg, ds):
    _, _, s = synthesize(cfg, ds, None, None, progress=False)
    c = s["_quantized"][0]
    return torch.cat([c["q.lo"].flatten(), c["q.hi"].flatten()]), s["units"][0]


def test_dm_beam_loop_learns_and_records_its_units(tmp_path):
    ds = load_dataset(BEAM)
    std = sum(ds.info.std) / len(ds.info.std)
    start, _ = _clips(_dm(0), ds)  # the same seed starts from the same real samples and clips
    end, unit = _clips(_dm(30), ds)
    assert unit["lr_units"] == "normalized" and unit["quantizer_space"] == "normalized"
    assert abs(unit["latent_lr"] - 0.01) < 1e-12  # a normalised latent steps 0.01 std
    moved = (end - start).abs().max()  # in std units
    assert moved > 0.1
    # the old loop: clips in raw dBm at lr 0.01 move at most ~0.01 dB a step (0.3 dB of a several-dB std)
    raw0, _ = _clips(_dm(0, space="pixels"), ds)
    raw30, runit = _clips(_dm(30, space="pixels"), ds)
    assert runit["quantizer_space"] == "pixels" and (raw30 - raw0).abs().max() / std < moved / 3
    # the set's stored decoder config says where it was quantized
    out = tmp_path / "dm"
    distill(_dm(1), out, progress=False)
    assert load_artifact(out).manifest["decoder"]["config"]["space"]["mean"] is not None
    # plain DM on vectors moves the data in std units too (lr 0.01 std, not 0.01 dBm)
    plain = RunConfig(method="dm", ipc=2, evaluate=False)
    plain.data.dataset = BEAM
    plain.method_args = {"iterations": 2, "batch_real": 8}
    _, _, sp = synthesize(plain, ds, None, None, progress=False)
    assert sp["units"][0]["lr_units"] == "normalized" and abs(sp["units"][0]["latent_lr"] - 0.01 * std) < 1e-9
