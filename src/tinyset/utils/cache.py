"""Where tinyset caches what it computes once (teachers, statistics, decoded images)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$TINYSET_CACHE``, else ``~/.cache/tinyset``."""
    return Path(cache_dir or os.environ.get("TINYSET_CACHE") or Path.home() / ".cache" / "tinyset")


def cached_dir(root: Path, keys: list[str], markers: tuple[str, ...]) -> Path:
    """``root / keys[0]``, unless it holds none of ``markers`` and an older key's folder does: a key that
    changed (a dataset path now resolved) still finds what was cached under the old one. Keys may repeat
    (a name with no path in it keys the same both ways)."""
    for key in keys:
        if any((root / key / m).exists() for m in markers):
            return root / key
    return root / keys[0]
