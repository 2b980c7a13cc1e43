"""Where tinyset caches what it computes once (teachers, statistics, decoded images)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$TINYSET_CACHE``, else ``~/.cache/tinyset``."""
    return Path(cache_dir or os.environ.get("TINYSET_CACHE") or Path.home() / ".cache" / "tinyset")
