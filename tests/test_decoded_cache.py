"""The decode-once cache of image folders: bit-identical to decoding, shared on disk, safe to resume."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tinyset.config import DataConfig
from tinyset.data import load_dataset
from tinyset.data.decoded import DecodedCache, folder_key
from tinyset.errors import TinysetError


def _tree(root, n=4):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_batches_equal_decoded(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("TINYSET_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "tree")
    off = load_dataset(f"imagefolder:{root}", DataConfig(image_size=16, decode_cache="off"))
    on = load_dataset(f"imagefolder:{root}", DataConfig(image_size=16, decode_cache=mode))
    idx = [5, 0, 7, 3]
    ref, _ = off.train.get_batch(idx)
    first, _ = on.train.get_batch(idx)
    again, _ = on.train.get_batch(idx)  # from the cache now
    assert torch.equal(ref, first) and torch.equal(ref, again)
    assert on.info.mean == off.info.mean
    if mode == "disk":
        assert list((tmp_path / "cache" / "decoded").iterdir())


def test_disk_cache_is_not_decoded_twice(tmp_path, monkeypatch):
    """A second process (a pickled copy, as a DataLoader worker gets) reads what the first filled."""
    monkeypatch.setenv("TINYSET_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "tree")
    ds = load_dataset(f"imagefolder:{root}", DataConfig(image_size=8, decode_cache="disk"))
    x, _ = ds.train.get_batch(list(range(8)))
    clone = pickle.loads(pickle.dumps(ds.train))
    assert clone.cache._pixels is None  # reopened lazily, not pickled
    calls = []
    y = clone.cache.get(torch.arange(8), lambda i: calls.append(i))
    assert calls == [] and torch.equal(y.float() / 255, x)


def test_unflagged_slot_is_decoded_again(tmp_path):
    """Pixels are written before their flag: an image whose flag never landed (a killed run) is redone."""
    c = DecodedCache(3, (1, 2, 2), "disk", tmp_path / "d")
    c.get(torch.tensor([0, 1]), lambda i: torch.full((1, 2, 2), i + 1, dtype=torch.uint8))
    c._filled[1] = 0  # as if killed between the pixels and the flag
    c._filled.flush()
    fresh = DecodedCache(3, (1, 2, 2), "disk", tmp_path / "d")
    calls = []
    out = fresh.get(torch.tensor([0, 1]), lambda i: calls.append(i) or torch.full((1, 2, 2), 9, dtype=torch.uint8))
    assert calls == [1] and out[0].unique().tolist() == [1] and out[1].unique().tolist() == [9]
    assert fresh.filled() == 2


def test_key_changes_with_files(tmp_path):
    root = _tree(tmp_path / "tree", n=1)
    files = sorted((root / "train").rglob("*.jpg"))
    k = folder_key(files, 16)
    assert k != folder_key(files, 32)
    files[0].write_bytes(files[0].read_bytes() + b"\0")
    assert k != folder_key(files, 16)


def test_bad_mode_and_mismatched_cache(tmp_path):
    root = _tree(tmp_path / "tree", n=1)
    with pytest.raises(TinysetError, match="decode_cache"):
        load_dataset(f"imagefolder:{root}", DataConfig(image_size=8, decode_cache="ram"))
    DecodedCache(2, (1, 2, 2), "disk", tmp_path / "d").filled()
    with pytest.raises(TinysetError, match="delete it"):
        DecodedCache(3, (1, 2, 2), "disk", tmp_path / "d").filled()


def test_classes_tsv_maps_imagenet_indices(tmp_path):
    root = _tree(tmp_path / "tree", n=1)
    (root / "classes.tsv").write_text("a\t7\tcock\nb\t0\ttench\n")
    info = load_dataset(f"imagefolder:{root}", DataConfig(image_size=8)).info
    assert info.extra["imagenet_indices"] == [7, 0] and info.extra["readable_names"] == ["cock", "tench"]
    (root / "classes.tsv").write_text("a\t7\tcock\n")
    with pytest.raises(TinysetError, match="does not list class folder"):
        load_dataset(f"imagefolder:{root}", DataConfig(image_size=8))
