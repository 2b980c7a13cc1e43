"""Shared fixtures: the bundled digits set and one small teacher trained once per session."""
from __future__ import annotations

import pytest
import torch

from tinyset.config import TeacherConfig
from tinyset.data import load_dataset
from tinyset.teachers.supervised import get_teacher

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def small_teacher_cfg(teacher_cache) -> TeacherConfig:
    return TeacherConfig(model="convnet:depth=3,width=32", epochs=8, batch_size=64, cache_dir=str(teacher_cache))


@pytest.fixture(scope="session")
def digits_teacher(digits, small_teacher_cfg):
    return get_teacher(digits, small_teacher_cfg, "cpu", progress=False)
