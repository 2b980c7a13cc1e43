"""The ImageNet path: an ImageFolder tree at 224x224 with a torchvision ResNet-18 teacher (trained
here for one epoch on random-looking data; nothing downloads), and every decoupled method on it.
Also CIFAR-10 from ../shared when TINYSET_DATA points there."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyset.artifact import load_artifact
from tinyset.config import DataConfig, RunConfig, TeacherConfig
from tinyset.jobs.distill import distill


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for c, colour in enumerate(((200, 40, 40), (40, 200, 40))):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(230, 300, 2)
                arr = (rng.normal(0, 30, (h, w, 3)) + colour).clip(0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.jpg" if i % 2 else d / f"{i}.png")
    return root


@pytest.mark.parametrize("method,args", [
    ("e2d", {"iterations": 2, "batch_size": 4}),
    ("sre2l", {"iterations": 2, "batch_size": 4}),
    ("rded", {"pool": 3, "crops": 2}),
    ("random", {}),
])
def test_imagefolder_224_with_torchvision_resnet18_teacher(tree, tmp_path_factory, method, args):
    cache = tmp_path_factory.getbasetemp() / "rn18-cache"
    cfg = RunConfig(method=method, ipc=2, device="cpu", evaluate=False,
                    data=DataConfig(dataset=f"imagefolder:{tree}", image_size=224),
                    teacher=TeacherConfig(model="tv:resnet18", epochs=1, batch_size=6, cache_dir=str(cache)))
    cfg.method_args = args
    out = tmp_path_factory.mktemp("out") / method
    distill(cfg, out, progress=False)
    art = load_artifact(out)
    assert art.images.shape == (4, 3, 224, 224)
    teacher = art.manifest["teacher"]
    assert (teacher is None) if method == "random" else (teacher["model"] == "tv:resnet18")
    if method == "rded":  # 224px -> factor 2: four 112px crops tiled per image
        assert art.manifest["method_config"]["factor"] is None and art.images.shape[-1] == 224


def test_cifar10_npz_from_shared_data(tmp_path):
    root = os.environ.get("TINYSET_DATA")
    if not root or not (Path(root) / "cifar10.npz").exists():
        pytest.skip("TINYSET_DATA not set or has no cifar10.npz: set TINYSET_DATA=../shared/data to run")
    cfg = RunConfig(method="rded", ipc=1, device="cpu", evaluate=False, data=DataConfig(dataset="cifar10", data_root=root),
                    teacher=TeacherConfig(model="convnet:depth=3,width=16", epochs=1, cache_dir=str(tmp_path / "c")))
    cfg.method_args = {"pool": 10, "crops": 2}
    distill(cfg, tmp_path / "run", progress=False)
    art = load_artifact(tmp_path / "run")
    assert art.images.shape == (10, 3, 32, 32) and art.class_names[0] == "airplane"
