"""The beam-management generator: identical for a seed, sane physics, registered as vectors."""
import torch

from tinyset.data import describe_datasets, load_dataset
from tinyset.data.beam import BeamConfig, codebooks, generate, parse_beam_args, topk_accuracy
from tinyset.errors import TinysetError
from tinyset.models import get_model

import pytest


def test_same_seed_same_data_and_other_seed_differs():
    cfg = BeamConfig(n_train=300, n_test=50)
    a = generate(cfg, 300, torch.Generator().manual_seed(5))
    b = generate(cfg, 300, torch.Generator().manual_seed(5))
    c = generate(cfg, 300, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    ds1 = load_dataset("beam:n_train=200,n_test=40,seed=3")
    ds2 = load_dataset("beam:n_train=200,n_test=40,seed=3")
    assert torch.equal(ds1.train.x, ds2.train.x) and torch.equal(ds1.test.targets, ds2.test.targets)


def test_codebooks_and_labels():
    cfg = BeamConfig()
    a, b = codebooks(cfg)
    assert a.shape == (32, 32) and b.shape == (8, 32)
    assert torch.allclose(a.abs().pow(2).sum(1), torch.ones(32, dtype=torch.float64))
    assert torch.allclose(b.abs().pow(2).sum(1), torch.ones(8, dtype=torch.float64))
    # a pure line-of-sight user (no scatter, huge K, no noise) is labelled with the Set-A beam nearest its angle
    los = BeamConfig(n_scatter=0, k_factor_db=(60.0, 60.0), meas_std_db=0.0)
    x, y = generate(los, 2000, torch.Generator().manual_seed(0))
    assert x.shape == (2000, 8) and y.min() >= 0 and y.max() < 32 and len(torch.unique(y)) == 32
    sparse = BeamConfig(set_b="sparse", n_scatter=0, k_factor_db=(60.0, 60.0), meas_std_db=0.0, noise_dbm=-200.0)
    xs, ys = generate(sparse, 500, torch.Generator().manual_seed(0))
    assert (xs.argmax(1) * 4 + 2 - ys).abs().float().mean() < 2.5  # the best Set-B beam points near the label


def test_registered_as_vector_dataset_with_mlp():
    assert "beam" in dict(describe_datasets())
    ds = load_dataset("beam:n_train=256,n_test=64")
    assert ds.info.kind == "vector" and ds.info.shape == (8,) and ds.info.num_classes == 32
    model = get_model("mlp:hidden=32", ds.info).eval()
    logits = model(ds.test.x)
    assert logits.shape == (64, 32)
    assert topk_accuracy(logits, ds.test.targets, 32) == 100.0
    with pytest.raises(TinysetError, match="unknown beam parameter"):
        parse_beam_args("antennas=4")
    with pytest.raises(TinysetError, match="set_b"):
        parse_beam_args("set_b=narrow")
