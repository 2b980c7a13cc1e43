"""Run bookkeeping: a JSONL event log, environment versions and a device choice."""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("tinyset")


class JsonlLog:
    """Appends one JSON object per event (losses, timings) to ``path``; ``None`` path = no file."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.tensorboard = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            from .tensorboard import writer_for

            self.tensorboard = writer_for(self.path)

    def write(self, event: str, **fields: Any) -> None:
        if not self.path:
            return
        rec = {"time": round(time.time(), 3), "event": event, **fields}
        from .. import distributed as dist

        if dist.is_distributed():  # ranks append to one file; each line is one small O_APPEND write
            rec["rank"] = dist.get_rank()
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.write(rec)


def versions() -> dict[str, str]:
    import numpy
    import torchvision

    from .._version import __version__

    return {
        "tinyset": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine_description() -> str:
    import os

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"CPU only, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores ({platform.machine()})"
