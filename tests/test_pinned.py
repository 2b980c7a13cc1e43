"""Pinned benchmark teachers: pinned once, loaded by sha256, retrained only on request and only
replaced within a point; the committed files match their YAML."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tinyset.config import TeacherConfig
from tinyset.data.base import DatasetInfo
from tinyset.errors import TinysetError
from tinyset.models import get_model, read_checkpoint, sha256_file

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def pinned(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    mod = importlib.import_module("pinned")
    monkeypatch.setattr(mod, "TEACHERS", tmp_path / "teachers")
    monkeypatch.setitem(mod.PINNED, "digits-tiny", mod.Pinned(
        "digits", None, TeacherConfig(model="convnet:depth=1,width=8", epochs=1, batch_size=64), "test teacher"))
    return mod


def test_pin_load_check_and_refuse_tampering(pinned, digits, tmp_path):
    cache = str(tmp_path / "cache")
    t = pinned.load_pinned("digits-tiny", digits, cache=cache)  # nothing pinned yet: trains and pins
    st, meta_path = pinned.paths("digits-tiny")
    meta = yaml.safe_load(meta_path.read_text())
    assert meta["sha256"] == sha256_file(st) and meta["retrain"].endswith("digits-tiny --data-root ../shared/data --retrain")
    assert meta["class_names"] == list(digits.info.class_names) and meta["recipe"]["epochs"] == 1
    assert t.reference["pinned"] == "digits-tiny" and t.reference["source"] == "checkpoint"
    # loading again reads the committed file: the same weights, no training
    again = pinned.load_pinned("digits-tiny", digits, cache=cache)
    x = digits.test.get_batch(torch.arange(8))[0]
    assert torch.equal(t.model(x), again.model(x))
    # a changed file is refused with a one-line error naming the fix
    st.write_bytes(st.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(TinysetError, match="sha256 .* restore it from git or retrain it"):
        pinned.load_pinned("digits-tiny", digits, cache=cache)


def test_retrain_keeps_the_pinned_teacher_unless_within_a_point(pinned, digits, tmp_path, monkeypatch):
    pinned.load_pinned("digits-tiny", digits, cache=str(tmp_path / "cache"))
    st, meta_path = pinned.paths("digits-tiny")
    meta = yaml.safe_load(meta_path.read_text())
    before = st.read_bytes()
    meta["test_accuracy"] += 5.0  # as if the pinned teacher were 5 points better than its recipe gives
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.raises(TinysetError, match="more than 1.0 point apart.*pinned teacher is kept"):
        pinned.load_pinned("digits-tiny", digits, retrain=True, cache=str(tmp_path / "cache"))
    assert st.read_bytes() == before


def test_unknown_pinned_name(pinned, digits):
    with pytest.raises(TinysetError, match="unknown pinned teacher 'nope'"):
        pinned.load_pinned("nope", digits)


@pytest.mark.parametrize("yaml_path", sorted((BENCH / "teachers").glob("*.yaml")), ids=lambda p: p.stem)
def test_committed_teachers_match_their_yaml(yaml_path):
    meta = yaml.safe_load(yaml_path.read_text())
    st = yaml_path.with_name(meta["file"])
    assert st.stat().st_size <= 5 * 2**20, "a pinned teacher is at most 5 MB"
    assert sha256_file(st) == meta["sha256"]
    ckpt = read_checkpoint(st)
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["dataset_info"].items()
                          if k in DatasetInfo.__dataclass_fields__})
    assert list(info.class_names) == meta["class_names"]
    model = get_model(ckpt["model"], info)
    model.load_state_dict(ckpt["state_dict"])  # the header names an architecture the weights fit
    assert 0 < meta["test_accuracy"] <= 100 and meta["retrain"].startswith("python benchmarks/pinned.py")
