"""One dataset under two path spellings is one dataset: the same teacher cache, and a run's own data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyset.config import DataConfig, EvalConfig, RunConfig, TeacherConfig
from tinyset.data import load_dataset
from tinyset.data.base import recorded_identity
from tinyset.errors import TinysetError
from tinyset.jobs.distill import distill, evaluate_run
from tinyset.teachers.supervised import teacher_dir, teacher_key, teacher_source


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), y_train=np.arange(20) % 4,
             x_test=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), y_test=np.arange(8) % 4)
    return path


def _two_spellings(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _npz(data / "set.npz")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    relative = load_dataset("npz:../data/set.npz", DataConfig())
    absolute = load_dataset(f"npz:{data / 'set.npz'}", DataConfig())
    return relative, absolute


def test_path_spellings_share_an_identity_and_a_teacher_key(tmp_path, monkeypatch, digits):
    relative, absolute = _two_spellings(tmp_path, monkeypatch)
    assert relative.info.name != absolute.info.name  # the names keep what the user typed
    assert relative.info.identity == absolute.info.identity == f"npz:{(tmp_path / 'data' / 'set.npz').resolve()}"
    cfg = TeacherConfig(cache_dir=str(tmp_path / "cache"))
    assert teacher_key(cfg, relative) == teacher_key(cfg, absolute)
    assert digits.info.identity == digits.info.name == "digits"  # named datasets: keys as before


def test_a_teacher_cached_under_the_typed_name_is_found_not_retrained(tmp_path, monkeypatch):
    relative, _ = _two_spellings(tmp_path, monkeypatch)
    cfg = TeacherConfig(cache_dir=str(tmp_path / "cache"))
    assert teacher_source(relative, cfg)[0] == "train"
    old = tmp_path / "cache" / "teachers" / teacher_key(cfg, relative, dataset_name=relative.info.name)
    assert old != teacher_dir(cfg, relative)
    old.mkdir(parents=True)
    (old / "teacher.pt").write_bytes(b"")  # a teacher cached before keys resolved the path
    assert teacher_dir(cfg, relative) == old and teacher_source(relative, cfg)[0] == "cached"


def test_a_runs_recorded_dataset_matches_it_under_another_spelling(tmp_path, monkeypatch, digits):
    relative, absolute = _two_spellings(tmp_path, monkeypatch)
    manifest = {"dataset": relative.info.name, "dataset_info": relative.info.to_dict()}
    assert recorded_identity(manifest) == absolute.info.identity
    assert recorded_identity(manifest) != digits.info.identity
    assert recorded_identity({"dataset": "cifar10"}) == "cifar10"  # old manifests without dataset_info


def test_eval_takes_the_runs_dataset_under_another_spelling_and_refuses_another_dataset(tmp_path, monkeypatch):
    relative, absolute = _two_spellings(tmp_path, monkeypatch)
    cfg = RunConfig(method="random", ipc=2, evaluate=False, data=DataConfig(dataset=relative.info.name))
    distill(cfg, tmp_path / "run", progress=False)
    hard = EvalConfig(protocol="fast", student="convnet:depth=1,width=8", epochs=1, label_modes=("hard",), seeds=1)
    res = evaluate_run(tmp_path / "run", RunConfig(eval=hard), ds=absolute, progress=False)
    assert res["artifact"] == str(tmp_path / "run") and (tmp_path / "run" / "eval.json").exists()
    other = tmp_path / "other.npz"
    np.savez(other, x_train=np.zeros((8, 8, 8, 3), np.uint8), y_train=np.arange(8) % 4)
    with pytest.raises(TinysetError, match="was distilled from npz:../data/set.npz, not npz:"):
        evaluate_run(tmp_path / "run", RunConfig(eval=hard), ds=load_dataset(f"npz:{other}", DataConfig()), progress=False)
