"""What a distillation job returns: one small type shared by the supervised and the
self-supervised jobs (its own module, so neither job imports the other for it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class DistillResult:
    path: Path
    manifest: dict
    report: dict | None
