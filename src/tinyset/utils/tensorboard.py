"""Optional TensorBoard mirror of ``log.jsonl``: with ``TINYSET_TENSORBOARD=1`` (or ``--tensorboard``)
every numeric field of a logged event becomes a scalar ``<event>/<field>`` in a ``tensorboard/``
folder beside the log. Needs the ``tensorboard`` package (``pip install tinyset[tensorboard]``)."""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

from ..errors import TinysetError

log = logging.getLogger(__name__)

ENV = "TINYSET_TENSORBOARD"
STEP_KEYS = ("it", "epoch", "step")  # the x axis, in order of preference
_WRITERS: dict[Path, "TensorBoardWriter"] = {}  # one writer per folder per process


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


class TensorBoardWriter:
    def __init__(self, directory: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TinysetError(f"{ENV} is set but the tensorboard package is missing; pip install 'tinyset[tensorboard]'") from None
        from .. import distributed as dist

        suffix = f".rank{dist.get_rank()}" if dist.is_distributed() else ""
        self.writer = SummaryWriter(log_dir=str(directory), filename_suffix=suffix)
        self.counts: dict[str, int] = defaultdict(int)

    def write(self, rec: dict) -> None:
        event = str(rec.get("event", "event"))
        step = next((int(rec[k]) for k in STEP_KEYS if isinstance(rec.get(k), (int, float))), None)
        if step is None:  # events without their own counter are numbered
            step = self.counts[event]
            self.counts[event] += 1
        for key, value in rec.items():
            if key in ("time", "event", "rank", *STEP_KEYS) or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{event}/{key}", value, step, walltime=rec.get("time"))
        self.writer.flush()


def writer_for(log_path: Path) -> TensorBoardWriter | None:
    """The writer for a log file's folder, or None when TensorBoard output is off."""
    if not enabled():
        return None
    directory = Path(log_path).parent / "tensorboard"
    if directory not in _WRITERS:
        _WRITERS[directory] = TensorBoardWriter(directory)
        log.info("tensorboard: writing scalars to %s", directory)
    return _WRITERS[directory]
