"""Progress that suits where the output goes: a tqdm bar with an ETA on a terminal, and plain log
lines every ``LOG_INTERVAL`` seconds when stderr is a file or a pipe (tqdm's carriage-return frames
made a 267 KB log for one digits run).

``progress_bar`` takes tqdm's arguments, so ``from ..utils.progress import progress_bar as tqdm``
swaps it in anywhere."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable

log = logging.getLogger("tinyset.progress")

LOG_INTERVAL = 10.0  # seconds between plain progress lines when not on a terminal


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class LogProgress:
    """The subset of tqdm's interface the code uses, reporting by ``logging`` at most every
    ``interval`` seconds (and once at the end) with a count, percent, rate and ETA."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0,
                 interval: float | None = None, **_: Any):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.n, self.start_n = total, desc, initial, initial
        self.interval = LOG_INTERVAL if interval is None else interval
        self.t0 = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else float("nan")
            head = f"{self.desc}: {self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)"
            tail = f", elapsed {_fmt_seconds(elapsed)}, ETA {_fmt_seconds(eta) if eta == eta else '?'}"
        else:
            head, tail = f"{self.desc}: {self.n}", f", elapsed {_fmt_seconds(elapsed)}"
        return head + tail + (f", {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.info("%s", self.line())

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n > self.start_n:
                log.info("%s", self.line())


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any):
    """tqdm (with ETA) on a terminal, ``LogProgress`` lines otherwise; ``disable`` gives a silent one."""
    if disable:
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=True, **kwargs)
    if _on_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)
