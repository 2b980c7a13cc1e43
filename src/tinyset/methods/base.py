"""What a distillation method is to the pipeline.

A method splits its work into *units* (a group of classes x a block of image slots); each unit runs
with a generator seeded by (run seed, unit), never by run order, so class-sharded runs and resumed
runs produce identical sets, and finished units are cached so an interrupted run resumes."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import apply_mapping, to_dict
from ..data.base import Dataset, sample_class_indices  # noqa: F401  (re-exported for the methods)
from ..errors import TinysetError
from ..registry import Registry
from ..utils.runlog import JsonlLog

log = logging.getLogger(__name__)

METHODS: Registry[type["Method"]] = Registry("method")


def register_method(name: str, doc: str | None = None):
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name, doc)(cls)

    return deco


@dataclass(frozen=True)
class Unit:
    """``classes`` x slots [start, stop): the images one call of ``run_unit`` makes, class-major."""

    classes: tuple[int, ...]
    start: int
    stop: int

    @property
    def key(self) -> str:
        """The unit's full identity (every class listed): seeds derive from it."""
        return f"c{'-'.join(map(str, self.classes))}_s{self.start}-{self.stop}"

    @property
    def short_key(self) -> str:
        """A short, stable name for files and logs: a class range when the classes are contiguous
        (``c0-99``), else a hash of the list. The full key would exceed file-name limits with 100+
        classes per unit (CIFAR-100, ImageNet-1K)."""
        c = self.classes
        if list(c) == list(range(c[0], c[0] + len(c))):
            cls = f"c{c[0]}-{c[-1]}" if len(c) > 1 else f"c{c[0]}"
        else:
            cls = "h" + hashlib.sha256(",".join(map(str, c)).encode()).hexdigest()[:16]
        return f"{cls}_s{self.start}-{self.stop}"

    @property
    def per_class(self) -> int:
        return self.stop - self.start

    def labels(self) -> torch.Tensor:
        return torch.tensor(self.classes).repeat_interleave(self.per_class)


class PassCounter:
    """Counts images through the teacher, forward and backward: the cost measure of every method."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def as_dict(self) -> dict[str, int]:
        return {"teacher_forward_images": self.forward, "teacher_backward_images": self.backward}


@dataclass
class MethodContext:
    dataset: Dataset
    teacher: nn.Module | None
    device: torch.device
    channels_last: bool = True
    amp: bool = False
    runlog: JsonlLog = field(default_factory=lambda: JsonlLog(None))
    progress: bool = True
    cache_dir: Any = None  # per-teacher cache folder (class statistics)
    counter: PassCounter = field(default_factory=PassCounter)
    teachers: list[nn.Module] = field(default_factory=list)  # extra teachers used in turn (recovery)
    teacher_dirs: list[Any] = field(default_factory=list)  # their cache folders (their own BN statistics)


@dataclass
class UnitResult:
    images: torch.Tensor  # [n, *shape] float in [0, 1]
    labels: torch.Tensor  # [n]
    stats: dict = field(default_factory=dict)
    encoded: dict | None = None  # quantizer in the loop: codes + state (see quant/inloop.py)

    def __post_init__(self) -> None:
        # the recovery loop hands its encoding over in stats, so methods built on it need no change
        if self.encoded is None and isinstance(self.stats, dict) and "_encoded" in self.stats:
            self.stats = dict(self.stats)
            self.encoded = self.stats.pop("_encoded")


class Method:
    """Base class: subclasses set ``Config`` (a dataclass) and implement ``run_unit``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    needs_teacher: ClassVar[bool] = False
    classes_per_unit: ClassVar[int | None] = 1  # None = every class in one unit
    selects_real: ClassVar[bool] = False  # picks real training images: ipc may not exceed a class's size

    def __init__(self, cfg: Any, ctx: MethodContext):
        self.cfg = cfg
        self.ctx = ctx
        if self.needs_teacher and ctx.teacher is None:
            raise TinysetError(f"method {self.name!r} needs a teacher")

    def plan(self, ipc: int, classes: list[int] | None = None) -> list[Unit]:
        """Units for ``classes`` (default all). Class groups are fixed by the method's config, not
        by the shard, so a shard aligned with groups reproduces the full run's images."""
        n = self.ctx.dataset.info.num_classes
        classes = list(range(n)) if classes is None else classes
        group = self.unit_classes(n)
        block = self.unit_slots(ipc)
        groups = [tuple(range(s, min(s + group, n))) for s in range(0, n, group)]
        units = []
        for grp in groups:
            grp = tuple(c for c in grp if c in classes)
            if grp:
                units += [Unit(grp, s, min(s + block, ipc)) for s in range(0, ipc, block)]
        return units

    def unit_classes(self, num_classes: int) -> int:
        return num_classes if self.classes_per_unit is None else self.classes_per_unit

    def unit_slots(self, ipc: int) -> int:
        return ipc

    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def resolved_config(self) -> dict:
        return to_dict(self.cfg)


def build_method(name: str, args: dict | None, ctx: MethodContext) -> Method:
    cls = METHODS.get(name)
    cfg = cls.Config()
    if args:
        apply_mapping(cfg, args, prefix="method_args.")
    return cls(cfg, ctx)
