"""Dataset names -> loaders, so the CLI and configs say ``cifar10`` or ``npz:my.npz``, never a class.

Two kinds of entries share one table:

* plain names (``digits``, ``mnist``, ``cifar10``, ``cifar100``), built with ``arg=None``;
* prefixed forms registered as ``"npz:<path>"`` / ``"imagefolder:<root>"``: the part before the colon
  is the prefix, and whatever follows it in a spec is handed to the builder as ``arg``.

Registering the prefixed forms under their display name keeps them in the "unknown dataset"
message and in ``tinyset datasets`` without a second table."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

from ..config import DataConfig
from ..errors import TinysetError
from ..registry import Registry
from .base import Dataset

log = logging.getLogger(__name__)

Builder = Callable[[Optional[str], DataConfig], Dataset]

DATASETS: Registry[Builder] = Registry("dataset")
_PREFIXES: dict[str, str] = {}  # "npz" -> "npz:<path>" (the registered display name)


def register_dataset(name: str, doc: str | None = None) -> Callable[[Builder], Builder]:
    """Register ``builder(arg, cfg) -> Dataset`` under ``name``; ``"pfx:<what>"`` registers a prefix."""
    prefix, sep, _ = name.partition(":")
    if sep:
        if not prefix:
            raise TinysetError(f"dataset form {name!r} needs a prefix before the colon")
        _PREFIXES[prefix] = name
    return DATASETS.register(name, doc)


def data_root(cfg: DataConfig) -> Path | None:
    """The folder of named datasets: ``cfg.data_root``, else ``$TINYSET_DATA``, else None."""
    root = cfg.data_root or os.environ.get("TINYSET_DATA")
    return Path(root).expanduser() if root else None


def load_dataset(spec: str, cfg: DataConfig | None = None) -> Dataset:
    """Load a dataset by registered name or prefixed form (``npz:<path>``, ``imagefolder:<root>``)."""
    cfg = cfg if cfg is not None else DataConfig(dataset=spec)
    spec = str(spec).strip()
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in _PREFIXES:
        if not arg:
            raise TinysetError(f"dataset {spec!r} needs something after the colon, e.g. {_PREFIXES[prefix]}")
        builder, arg_or_none = DATASETS.get(_PREFIXES[prefix]), arg
    else:
        builder, arg_or_none = DATASETS.get(spec), None
    ds = builder(arg_or_none, cfg)
    log.info(
        "dataset %s: %d train / %s test, %d classes, shape %s",
        ds.info.name, len(ds.train), len(ds.test) if ds.test is not None else "no", ds.info.num_classes, ds.info.shape,
    )
    return ds


def describe_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) for every entry: plain names first, then the prefixed forms."""
    names = DATASETS.names()
    ordered = [n for n in names if ":" not in n] + [n for n in names if ":" in n]
    return [(n, DATASETS.describe(n)) for n in ordered]
