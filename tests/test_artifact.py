"""Artifact format: bit-exact round trips, atomic writes, corruption detection, preview, export."""
import json
import os

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from tinyset.artifact import (
    FORMAT_VERSION,
    PREVIEW_FILE,
    TENSORS_FILE,
    export_imagefolder,
    load_artifact,
    make_grid_image,
    save_artifact,
)
from tinyset.artifact.preview import NAME_COLUMN_PX, PAD_PX
from tinyset.errors import TinysetError
from tinyset.quant import pack_bits

CLASSES = ["zero", "one/two", "three"]


def _images(n=6, c=3, hw=8, seed=0):
    """Images made of k/255 values, so 8-bit PNG export is exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, hw, hw), generator=g).float() / 255.0


def _manifest():
    return {
        "dataset": "toy",
        "dataset_info": {"name": "toy", "class_names": CLASSES},
        "class_names": CLASSES,
        "class_to_idx": {n: i for i, n in enumerate(CLASSES)},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "image_shape": [3, 8, 8],
        "ipc": 2,
        "method": "random",
        "method_config": {"lr": 0.1},
        "seed": 0,
        "teacher": None,
        "wall_time_seconds": 1.5,
    }


def _save(path, **kw):
    images = kw.pop("images", _images())
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    tensors = kw.pop("tensors", {"images": images, "labels": labels})
    return save_artifact(path, tensors, kw.pop("manifest", _manifest()), preview=images, preview_labels=labels, class_names=CLASSES, **kw)


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_round_trip(tmp_path):
    images = _images()
    extra = torch.randn(6, 3, dtype=torch.float16)
    packed = pack_bits(torch.randint(0, 16, (100,)), 4)
    out = save_artifact(
        tmp_path / "art",
        {"images": images, "labels": torch.tensor([0, 0, 1, 1, 2, 2]), "soft": extra, "codes": packed},
        {**_manifest(), "bits": {"codes": 4}},
        preview=images,
        preview_labels=torch.tensor([0, 0, 1, 1, 2, 2]),
    )
    art = load_artifact(out)
    assert torch.equal(art.images, images) and art.images.dtype == torch.float32
    assert torch.equal(art.tensors["soft"], extra) and torch.equal(art.tensors["codes"], packed)
    assert art.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert art.class_names == CLASSES and art.ipc == 2
    m = art.manifest
    assert m["format_version"] == FORMAT_VERSION and m["tinyset_version"] and m["created"].endswith("+00:00")
    for key in ("dataset", "dataset_info", "normalization", "method_config", "seed", "teacher", "wall_time_seconds", "torch_version"):
        assert key in m
    assert "bits" not in m  # moved into components
    comps = m["components"]
    for name, t in art.tensors.items():
        assert comps[name]["bytes"] == t.numel() * t.element_size()
        assert comps[name]["shape"] == list(t.shape)
    assert comps["images"]["bits"] == 32 and comps["soft"]["bits"] == 16 and comps["codes"]["bits"] == 4
    assert comps["codes"]["bytes"] == 50
    assert m["total_bytes"] == sum(c["bytes"] for c in comps.values()) and m["total_bits"] == 8 * m["total_bytes"]
    assert set(m["checksums"]) == {TENSORS_FILE, PREVIEW_FILE}
    assert _leftovers(tmp_path) == []


def test_corrupted_tensors_detected(tmp_path):
    out = _save(tmp_path / "art")
    f = out / TENSORS_FILE
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(TinysetError, match="checksum mismatch: file changed or corrupted"):
        load_artifact(out)
    load_artifact(out, verify=False)  # payload bytes flipped, header intact: still parses


def test_unreadable_tensors_file(tmp_path):
    out = _save(tmp_path / "art")
    (out / TENSORS_FILE).write_bytes(b"garbage")
    with pytest.raises(TinysetError, match="unreadable"):
        load_artifact(out, verify=False)


@pytest.mark.parametrize("damage", ["missing", "truncated", "no_version", "newer"])
def test_bad_manifest(tmp_path, damage):
    out = _save(tmp_path / "art")
    mpath = out / "manifest.json"
    text = mpath.read_text()
    if damage == "missing":
        mpath.unlink()
        match = "manifest.json is missing"
    elif damage == "truncated":
        mpath.write_text(text[: len(text) // 2])
        match = "not valid JSON"
    else:
        m = json.loads(text)
        if damage == "no_version":
            del m["format_version"]
            match = "no format_version"
        else:
            m["format_version"] = FORMAT_VERSION + 1
            match = "written by a newer tinyset"
        mpath.write_text(json.dumps(m))
    with pytest.raises(TinysetError, match=match):
        load_artifact(out)


def test_missing_dir_and_tensors(tmp_path):
    with pytest.raises(TinysetError, match="does not exist"):
        load_artifact(tmp_path / "nope")
    out = _save(tmp_path / "art")
    (out / TENSORS_FILE).unlink()
    with pytest.raises(TinysetError, match="tensors.safetensors is missing"):
        load_artifact(out)


def test_components_mismatch(tmp_path):
    out = _save(tmp_path / "art")
    m = json.loads((out / "manifest.json").read_text())
    m["components"]["images"]["shape"] = [1, 2, 3]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(TinysetError, match="manifest says"):
        load_artifact(out)


def test_existing_without_overwrite_refused(tmp_path):
    out = _save(tmp_path / "art")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(TinysetError, match="already exists"):
        _save(tmp_path / "art", images=_images(seed=1))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces(tmp_path):
    _save(tmp_path / "art")
    new = _images(seed=1)
    _save(tmp_path / "art", images=new, overwrite=True)
    assert torch.equal(load_artifact(tmp_path / "art").images, new)
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_foreign_directory(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    with pytest.raises(TinysetError, match="does not look like a tinyset artifact"):
        _save(tmp_path / "home", overwrite=True)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"


def _boom(*a, **k):
    raise RuntimeError("simulated crash")


def test_crash_during_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors.torch, "save_file", _boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _save(tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


def test_crash_during_overwrite_keeps_old(tmp_path, monkeypatch):
    old = _images()
    _save(tmp_path / "art")
    monkeypatch.setattr(safetensors.torch, "save_file", _boom)
    with pytest.raises(RuntimeError):
        _save(tmp_path / "art", images=_images(seed=1), overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_artifact(tmp_path / "art").images, old)
    assert _leftovers(tmp_path) == []


def test_crash_between_renames_restores_old(tmp_path, monkeypatch):
    """The swap's second rename fails: the old artifact must be put back, the new one discarded."""
    old = _images()
    _save(tmp_path / "art")
    real_replace = os.replace

    def flaky(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError("simulated crash mid-swap")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        _save(tmp_path / "art", images=_images(seed=1), overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_artifact(tmp_path / "art").images, old)
    assert _leftovers(tmp_path) == []


def test_preview_size(tmp_path):
    out = _save(tmp_path / "art")
    img = Image.open(out / PREVIEW_FILE)
    cell = 32  # 8 px upscaled x4 (nearest) to reach at least 32 px
    assert img.size == (NAME_COLUMN_PX + 2 * (cell + PAD_PX) + PAD_PX, 3 * (cell + PAD_PX) + PAD_PX)
    # nearest upscale: the first cell's top-left 4x4 block is the first pixel of the first image
    px = (_images()[0, :, 0, 0] * 255).round().to(torch.uint8).tolist()
    assert img.convert("RGB").getpixel((NAME_COLUMN_PX + PAD_PX + 3, PAD_PX + 3)) == tuple(px)


def test_preview_grayscale_unlabelled_and_max_per_class():
    img = make_grid_image(torch.rand(7, 1, 28, 28), max_per_class=3)
    assert img.mode == "RGB" and img.size == (3 * (56 + PAD_PX) + PAD_PX, 3 * (56 + PAD_PX) + PAD_PX)
    soft = torch.eye(2).repeat(5, 1)  # soft labels, 5 per class
    img = make_grid_image(torch.rand(10, 3, 40, 40), soft, max_per_class=2)
    assert img.size == (2 * (40 + PAD_PX) + PAD_PX, 2 * (40 + PAD_PX) + PAD_PX)


def test_vector_artifact_has_no_preview_and_refuses_export(tmp_path):
    x = torch.randn(4, 5)
    out = save_artifact(tmp_path / "vec", {"images": x, "labels": torch.tensor([0, 1, 0, 1])}, {"dataset": "v"}, preview=x)
    assert not (out / PREVIEW_FILE).exists()
    assert torch.equal(load_artifact(out).images, x)
    with pytest.raises(TinysetError, match="holds vectors"):
        export_imagefolder(out, tmp_path / "export")


@pytest.mark.parametrize("channels", [1, 3])
def test_export_imagefolder(tmp_path, channels):
    images = _images(c=channels)
    out = _save(tmp_path / "art", images=images)
    root = export_imagefolder(out, tmp_path / "export")
    files = sorted(root.rglob("*.png"))
    assert len(files) == 6
    assert sorted(p.name for p in root.iterdir()) == ["one_two", "three", "zero"]
    labels = [0, 0, 1, 1, 2, 2]
    folders = ["zero", "one_two", "three"]
    for i in range(6):
        arr = np.asarray(Image.open(root / folders[labels[i]] / f"{i}.png"))
        if channels == 1:
            arr = arr[:, :, None]
        back = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
        assert torch.equal(back, images[i])
    with pytest.raises(TinysetError, match="already exists"):
        export_imagefolder(out, root)
    export_imagefolder(load_artifact(out), root, overwrite=True)
    assert len(list(root.rglob("*.png"))) == 6 and _leftovers(tmp_path) == []


def test_preview_labels_default_to_saved_labels(tmp_path):
    images = _images()
    out = save_artifact(tmp_path / "art", {"images": images, "labels": torch.tensor([0, 0, 1, 1, 2, 2])}, _manifest(), preview=images)
    assert Image.open(out / PREVIEW_FILE).size[1] == 3 * (32 + PAD_PX) + PAD_PX  # one row per class
