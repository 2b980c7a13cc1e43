"""Learning-rate factors per epoch (multiplied into the base lr by ``LambdaLR``)."""
from __future__ import annotations

import math
from typing import Callable

from ..errors import TinysetError


def cosine(epochs: int) -> Callable[[int], float]:
    return lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / max(epochs, 1)))


def half_cosine(epochs: int) -> Callable[[int], float]:
    """RDED's evaluation schedule: the first half period of a cosine, so the lr ends at 0.5x the start."""
    return lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / (2 * max(epochs, 1))))


def smoothed_cosine(epochs: int, stretch: float = 2.0) -> Callable[[int], float]:
    """EDC's "smoothed" schedule (ls-type cos2, st=2): a cosine stretched over ``stretch`` x the run,
    so the lr stays high longer, for the first 5/6 of the epochs; then a linear tail to zero.
    Deviation, kept on purpose: EDC's code drops the lr abruptly at 5/6 of the run; here the tail
    starts from where the cosine left off (no jump), so results under this schedule are not EDC's
    numbers exactly."""
    knee = epochs * 5 / 6

    def f(e: int) -> float:
        if e <= knee:
            return 0.5 * (1.0 + math.cos(math.pi * e / (stretch * epochs)))
        at_knee = 0.5 * (1.0 + math.cos(math.pi * knee / (stretch * epochs)))
        return at_knee * max(epochs - e, 0) / max(epochs - knee, 1e-9)

    return f


def constant(epochs: int) -> Callable[[int], float]:
    return lambda e: 1.0


SCHEDULES = {"cosine": cosine, "half_cosine": half_cosine, "smoothed_cosine": smoothed_cosine, "constant": constant}


def get_schedule(name: str, epochs: int) -> Callable[[int], float]:
    if name not in SCHEDULES:
        raise TinysetError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](epochs)
