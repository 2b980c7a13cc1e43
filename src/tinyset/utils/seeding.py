"""Seeds that depend only on (run seed, what is being made), never on run order, so class-sharded
runs and resumed runs produce identical sets."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(base: int, *key: object) -> int:
    """A 63-bit seed from a base seed and a key, e.g. ``derive_seed(0, "unit", (3, 4), 0)``."""
    text = repr((int(base),) + tuple(key)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CutMix in the reference codes used unseeded numpy)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
