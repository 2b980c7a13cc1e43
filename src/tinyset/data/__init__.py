"""Datasets: ``load_dataset("digits" | "mnist" | "cifar10" | "cifar100" | "npz:<path>" | "imagefolder:<root>")``.

The builder modules are imported here only so that their ``@register_dataset`` lines run."""
from __future__ import annotations

from . import beam, digits, imagefolder, npz, torchvision_sets  # noqa: F401  (registration side effects)
from .base import Dataset, DatasetInfo, Split, TensorSplit, channel_stats
from .imagefolder import FileSplit
from .registry import DATASETS, data_root, describe_datasets, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "FileSplit",
    "Split",
    "TensorSplit",
    "channel_stats",
    "data_root",
    "describe_datasets",
    "load_dataset",
    "register_dataset",
]
