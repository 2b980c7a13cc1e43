"""What the CPU can do fast. bf16 autocast is ~2x faster than float32 on CPUs with native bf16
(avx512_bf16 or AMX) and ~10x slower on CPUs without it, where PyTorch emulates bf16 (measured on an
AVX2-only AMD EPYC: benchmarks/results/cpu_bf16.md). So ``amp`` is never turned on for a CPU
without asking, and asking for it on such a CPU logs a warning."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def warn_slow_cpu_bf16() -> None:
    """Say once per process that CPU bf16 autocast will be slow here."""
    if not cpu_has_native_bf16():
        log.warning("amp (bf16 autocast) on a CPU without avx512_bf16/amx_bf16: PyTorch emulates bf16 here, "
                    "about 10x slower than float32 (benchmarks/cpu_bf16.py); set amp=false")
