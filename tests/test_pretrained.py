"""Pretrained torchvision teachers restricted to a dataset's ImageNet classes (local weights only:
nothing here downloads)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tinyset.config import DataConfig, TeacherConfig
from tinyset.data import load_dataset
from tinyset.errors import TinysetError
from tinyset.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, pretrained_teacher
from tinyset.teachers.supervised import get_teacher


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("inet")
    rng = np.random.default_rng(1)
    for c in ("n01", "n02", "n03"):
        for split in ("train", "val"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "classes.tsv").write_text("n01\t417\tballoon\nn02\t3\tshark\nn03\t999\ttoilet tissue\n")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("w") / "resnet18.pt"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def test_head_rows_are_the_full_models_logits(tree, weights):
    net, path = weights
    ds = load_dataset(f"imagefolder:{tree}", DataConfig(image_size=32))
    model, ref = pretrained_teacher("tv:resnet18", ds.info, str(path))
    model.eval()
    x, _ = ds.train.get_batch([0, 3, 5])
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        full = net((x - mean) / std)
        mine = model(x)
    assert mine.shape == (3, 3) and ref["head_classes"] == [417, 3, 999]
    torch.testing.assert_close(mine, full[:, [417, 3, 999]], rtol=0, atol=1e-5)


def test_get_teacher_pretrained_caches_accuracy(tree, weights, tmp_path):
    _, path = weights
    ds = load_dataset(f"imagefolder:{tree}", DataConfig(image_size=32))
    tcfg = TeacherConfig(model="tv:resnet18", pretrained=str(path), cache_dir=str(tmp_path))
    t = get_teacher(ds, tcfg, "cpu", progress=False)
    assert t.reference["source"] == "pretrained" and t.reference["sha256"] and 0 <= t.reference["test_accuracy"] <= 100
    assert (t.directory / "meta.json").exists()
    assert not any(p.requires_grad for p in t.model.parameters())
    again = get_teacher(ds, tcfg, "cpu", progress=False)
    assert again.reference["test_accuracy"] == t.reference["test_accuracy"] and again.directory == t.directory


def test_pretrained_errors(tree, weights, tmp_path):
    _, path = weights
    ds = load_dataset(f"imagefolder:{tree}", DataConfig(image_size=32))
    with pytest.raises(TinysetError, match="not found"):
        pretrained_teacher("tv:resnet18", ds.info, str(tmp_path / "missing.pt"))
    with pytest.raises(TinysetError, match="head classes given"):
        pretrained_teacher("tv:resnet18", ds.info, str(path), [1, 2])
    with pytest.raises(TinysetError, match="out of range"):
        pretrained_teacher("tv:resnet18", ds.info, str(path), [1, 2, 1000])
    with pytest.raises(TinysetError, match="do not fit"):
        pretrained_teacher("tv:resnet34", ds.info, str(path))
    with pytest.raises(TinysetError, match="unknown weights"):
        pretrained_teacher("tv:resnet18", ds.info, "IMAGENET9K_V9")
    digits = load_dataset("digits")
    with pytest.raises(TinysetError, match="ImageNet index of each class"):
        pretrained_teacher("tv:resnet18", digits.info, str(path))


def test_cli_teacher_pretrained(tree, weights, tmp_path, capsys):
    from tinyset import cli

    _, path = weights
    rc = cli.main(["teacher", "--dataset", f"imagefolder:{tree}", "--set", "data.image_size=32", "--teacher-model",
                   "tv:resnet18", "--pretrained", str(path), "--set", f"teacher.cache_dir={tmp_path}", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "test accuracy" in out and str(path) in out
