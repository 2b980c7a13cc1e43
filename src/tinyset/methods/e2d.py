"""E2D, Exploration-Exploitation Distillation: SRe2L's recovery loop with a real-image start and a
crop memory.

1. Full-image initialisation: each synthetic image starts as one whole real image of its class
   (random, or the teacher's most confident of a pool), resized without cropping.
2. Exploration (first ``explore_fraction`` of the budget): independent random crops per image,
   remembering crops whose CE exceeds ``eps``.
3. Exploitation: remembered crops sampled by softmax of their loss until solved (CE <= eps).
4. Early stop once every memory is empty; the saved iterations are recorded.

Deviation: the early stop is judged per unit (``batch_size`` images, 100 by default); the reference
optimises sub-batches of 20 images and stops each on its own, so it fires more often (on digits,
never here at 100). ``method_args.batch_size=20`` judges it per 20 images, at a lower throughput.

The reference loop as one switch: ``method_args.stats=reference`` (the row ``e2d_reference``) sets
the structure of the reference recovery script (ncsu-dk-lab/E2D, Branch_ImageNet_1K/recover), each
piece its own option and still overridable (``stats=reference`` + ``batch_size=100`` keeps the rest):
- ``match_conv=True``, ``patch_size=16``: statistics matched at every Conv2d input as well as every
  BN input (channel mean/var + 16x16-patch mean/var), half global, half class-aware, x10 on the
  first conv (the raw image);
- ``bn_targets="crop"``, ``stats_crop_scale=(0.08, 1)``: BN running statistics for the global BN
  term; class and Conv2d targets from one pass over real images under crop 0.08-1 + flip;
- ``class_target="pooled"``: the class-aware term compares the batch's pooled statistics with the
  statistics pooled over the labels of the batch;
- ``stats_ema=0.8``, ``stats_ema_persist=True``: the batch-statistics EMA is not reset between
  sub-batches (units);
- ``classes_per_batch=2``, ``batch_size=20``: sub-batches of 2 classes x 10 slots (at IPC 10);
- ``init_sampling="independent"``, ``init_flip=True``: each slot's start drawn from its class on its
  own (repeats allowed) and flipped with probability 1/2.
Where tinyset differs from the reference on purpose. Its slips, not copied (see
``../shared/notes/reference-findings.md``): the class-aware term matches like with like (the pooled
batch variance against the pooled variance of the batch's classes; the reference's class "variance"
is a mean of per-image variances that real batches cannot reach); class patch mean and variance are
not swapped; the EMA starts at the first batch's statistics, not at 0 (its first steps saw 0.2x the
batch statistics); targets, mean/std and class count come from the dataset, and the statistics are
computed, cached with the teacher and used in the same run. Choices: a map whose side is not a
multiple of 16 is split into blocks of its own pixels rather than resized bilinearly up to one (an
8x8 map is one 8x8 cell, not one interpolated 16x16 cell); the global Conv2d targets are pooled over
the whole pass (the reference averages per-batch pooled variances); IPC above 10 keeps whole-class
units (2 classes x 10 slots per block) where the reference's class-major stream of 20 mixes the end
of one class with the start of the next. Not carried over: the reference's ``drop_rate`` (random
skipping of conv terms; 0 in its defaults) and its patch shuffle of the initial images (a no-op
there: it concatenates the unshuffled list)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import BUNDLES
from ..errors import TinysetError
from ..quant.inloop import QuantizerConfig
from .base import Unit, UnitResult, register_method, sample_class_indices
from .recovery import ExploreExploitPolicy, RandomCropPolicy, recover
from .sre2l import RecoveryMethod, noise_init


@dataclass
class E2DConfig:
    iterations: int = 200
    explore_fraction: float = 0.7  # K = 140 of 200 in the reference
    eps: float = 0.5
    lr: float = 0.05
    betas: tuple[float, float] = (0.5, 0.9)
    r_bn: float = 0.1
    first_bn_multiplier: float = 10.0
    class_stats: bool = True
    # view (measured under this loop's crops) | teacher (running + un-augmented class stats) | crop (the
    # reference's: running + class/conv stats under a crop 0.08-1 + flip)
    bn_targets: str = "view"
    stats_ema: float | None = 0.8
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    batch_size: int = 100
    log_every: int = 50
    init: str = "real"  # real | confident | noise (ablation)
    confident_pool: int = 10  # candidates per image for init=confident
    # the reference structure (module docstring); stats=reference sets them all, explicit keys win
    stats: str = "default"  # default | reference: a bundle of the options below
    match_conv: bool = False  # also match every Conv2d input (channel + patch statistics)
    patch_size: int = 16  # patch cells of the Conv2d-input statistics (0 = channel statistics only)
    class_target: str = "per_image"  # per_image | pooled (the batch against the mixture of its labels)
    stats_crop_scale: tuple[float, float] = (0.08, 1.0)  # the statistics pass's crop under bn_targets="crop"
    stats_ema_persist: bool = False  # carry the statistics EMA across units
    classes_per_batch: int | None = None  # classes per unit (None: as many as batch_size holds)
    init_sampling: str = "distinct"  # distinct: k different images per class | independent: per slot, repeats allowed
    init_flip: bool = False  # flip each real start image with probability 1/2
    memory: bool = True  # False = exploration only (ablation e2d_no_memory)
    solved_ce: float | None = None  # stripe remedy: skip updates of images whose CE is below this (see recovery.py)
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(granularity="image"))  # QuADD in the loop


# method_args of each statistics structure (``stats``); the keys given beside ``stats`` win
STATS_STRUCTURES: dict[str, dict] = {
    "default": {"match_conv": False, "patch_size": 16, "class_target": "per_image", "bn_targets": "view",
                "stats_crop_scale": (0.08, 1.0), "stats_ema": 0.8, "stats_ema_persist": False,
                "classes_per_batch": None, "batch_size": 100, "init_sampling": "distinct", "init_flip": False},
    "reference": {"match_conv": True, "patch_size": 16, "class_target": "pooled", "bn_targets": "crop",
                  "stats_crop_scale": (0.08, 1.0), "stats_ema": 0.8, "stats_ema_persist": True,
                  "classes_per_batch": 2, "batch_size": 20, "init_sampling": "independent", "init_flip": True},
}

# named rows for the benchmarks: name -> (method, method_args)
ROWS = {"e2d_reference": ("e2d", {"stats": "reference"})}


def stats_structure(name: str) -> dict:
    if name not in STATS_STRUCTURES:
        raise TinysetError(f"e2d stats must be one of {', '.join(STATS_STRUCTURES)}, not {name!r}")
    return dict(STATS_STRUCTURES[name])


BUNDLES[(E2DConfig, "stats")] = stats_structure


def _independent_draws(ds, c: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` training indices of class ``c``, each drawn uniformly on its own (repeats allowed)."""
    pool = ds.train.class_indices(c)
    if len(pool) == 0:
        raise TinysetError(f"class {c} has no training images")
    return pool[torch.randint(len(pool), (n,), generator=g)]


@register_method("e2d", "E2D: real-image start, explore random crops, exploit remembered hard crops, early stop")
class E2D(RecoveryMethod):
    Config = E2DConfig

    def _init_images(self, unit: Unit, g: torch.Generator) -> tuple[torch.Tensor, list[int]]:
        ds, info = self.ctx.dataset, self.ctx.dataset.info
        n = len(unit.classes) * unit.per_class
        if self.cfg.init == "noise":
            return noise_init(n, info, g), []
        if self.cfg.init == "real":
            if self.cfg.init_sampling == "independent":  # the reference: each slot its own draw, repeats allowed
                idx = torch.cat([_independent_draws(ds, c, unit.per_class, g) for c in unit.classes])
            elif self.cfg.init_sampling == "distinct":
                idx = torch.cat([sample_class_indices(ds, c, unit.per_class, g) for c in unit.classes])
            else:
                raise TinysetError(f"e2d init_sampling must be distinct or independent, not {self.cfg.init_sampling!r}")
        elif self.cfg.init == "confident":
            idx = torch.cat([self._confident(c, unit.per_class, g) for c in unit.classes])
        else:
            raise TinysetError(f"e2d init must be real, confident or noise, not {self.cfg.init!r}")
        x, _ = ds.train.get_batch(idx)  # whole images, already at the dataset's resolution
        if self.cfg.init_flip:
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x, idx.tolist()

    @torch.no_grad()
    def _confident(self, c: int, k: int, g: torch.Generator) -> torch.Tensor:
        """The ``k`` images of class ``c`` (from a random pool) with the lowest teacher CE."""
        pool = sample_class_indices(self.ctx.dataset, c, k * self.cfg.confident_pool, g)
        pool = torch.unique(pool)
        x, _ = self.ctx.dataset.train.get_batch(pool)
        logits = self.ctx.teacher(x.to(self.ctx.device)).float().cpu()
        self.ctx.counter.forward += len(pool)
        ce = F.cross_entropy(logits, torch.full((len(pool),), c), reduction="none")
        return pool[ce.argsort()[:k]]

    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:
        labels = unit.labels()
        x0, sources = self._init_images(unit, g)
        cfg = self.cfg
        explore = int(round(cfg.explore_fraction * cfg.iterations))
        if cfg.memory:
            policy = ExploreExploitPolicy(len(labels), tuple(cfg.crop_scale), explore, cfg.eps, cfg.flip)
        else:
            policy = RandomCropPolicy(tuple(cfg.crop_scale), cfg.flip)
        targets, stats_secs = self.bn_targets(policy)
        x, stats = recover(x0, labels, cfg, policy, self.ctx, g, targets, desc=f"e2d {unit.short_key}",
                           ema_states=self.ema_states())
        stats["class_stats_seconds"] = stats_secs
        stats["source_indices"] = sources
        return UnitResult(x, labels, stats)
