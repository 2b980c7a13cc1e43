"""BatchNorm-statistics matching: the regulariser of SRe2L-style recovery.

For every BatchNorm2d layer of a frozen teacher, the L2 distance between the statistics of the
batch's input to that layer and a target, globally and optionally per class (class-conditional).

Which targets (``bn_targets``):
- ``"view"`` (default): both targets measured on real training images under the *same view the loop
  feeds* (its crops, flips, shifts), so a real batch under that view sits at the floor of the term
  (only sampling noise). The teacher's running statistics were gathered under its training view
  (pad-crop-flip), the old class statistics on un-augmented images; the loop's views (random-resized
  crops, upsampled) have other statistics, so those targets pushed synthetic images away from real
  ones (CIFAR-10 subset: a real batch scored ~4 against running statistics under the teacher's view,
  ~38 under E2D's view).
- ``"teacher"`` (the SRe2L/E2D convention): running statistics (global) and class statistics of
  un-augmented images.

The class-conditional term matches like with like: per-image channel means and per-image spatial
variances, averaged over the images of a class, on both sides (the reference compares a pooled
batch variance with a mean of per-image variances, which real data never reaches). The global term
compares pooled batch mean/variance with pooled population mean/variance."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from ..utils.progress import progress_bar as tqdm  # tqdm on a terminal, log lines otherwise

from ..data.base import Dataset
from ..errors import TinysetError
from ..utils.seeding import derive_seed, generator

log = logging.getLogger(__name__)

# Bump when what the statistics pass computes changes: the cache key carries it.
# v1: class_stats_<n>.pt (un-augmented class statistics only); v2: global + class, per view.
BN_STATS_VERSION = 3  # 3: the cache file holds tensors only (loaded with weights_only=True)

Stats = list[tuple[torch.Tensor, torch.Tensor]]  # per BN layer: (mean, var)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


class _PerImageMoments(torch.autograd.Function):
    """Per-image channel means and second moments with a one-pass backward.

    Autograd through ``x.mean`` and ``(x * x).mean`` makes ~6 activation-sized passes in the
    backward (expand + divide for each mean, two multiplies for the square, the sum of both paths);
    on ConvNet-3 at 32 px that was ~75% of the bare teacher forward+backward. The gradient is
    simply dL/dx = (g_m + 2 x g_s) / HW: one ``addcmul`` in x's memory format."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        ctx.save_for_backward(x)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            rows = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])  # a view, no copy
            return rows.mean(1), (rows * rows).mean(1)
        return x.mean(dim=(2, 3)), (x * x).mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, g_m, g_s):
        (x,) = ctx.saved_tensors
        hw = x.shape[2] * x.shape[3]
        n, c = x.shape[:2]
        # an unused output's gradient arrives as None; addcmul's result takes x's memory format
        g_m = x.new_zeros(n, c) if g_m is None else g_m
        g_s = x.new_zeros(n, c) if g_s is None else g_s
        return torch.addcmul((g_m / hw).view(n, c, 1, 1), x, (g_s * (2.0 / hw)).view(n, c, 1, 1))


def _per_image_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image channel means E[x] and second moments E[x^2], each [N, C], in one pass.

    Every statistic the matcher needs derives from these two: global mean/var (average over
    images; the images have equal sizes) and per-image variances. One pass over the activation
    instead of four reductions, on channels_last input a free (N, HW, C) view, and a one-pass
    backward (``_PerImageMoments``) matter: on ConvNet-3 the first BN layer's input is the largest
    tensor of the whole forward."""
    return _PerImageMoments.apply(x.float())


def _per_image_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, s = _per_image_moments(x)
    return m, (s - m * m).clamp_min(0)


@dataclass
class BNTargets:
    """What one teacher's BN layers are matched against. ``global_stats`` None = running statistics."""

    global_stats: Stats | None = None
    class_stats: Stats | None = None


class BNMatcher:
    """Forward hooks on a teacher's BN layers that accumulate the matching loss of the last forward."""

    def __init__(
        self,
        model: nn.Module,
        first_multiplier: float = 10.0,
        class_targets: Stats | None = None,
        ema_momentum: float | None = None,
        global_targets: Stats | None = None,
    ):
        self.layers = bn_layers(model)
        self.weights = [first_multiplier if i == 0 else 1.0 for i in range(len(self.layers))]
        self.class_targets = class_targets  # per layer: (mean [K, C], var [K, C])
        self.global_targets = global_targets  # per layer: (mean [C], var [C]); None = running statistics
        for name, t in (("class", class_targets), ("global", global_targets)):
            if t is not None and (len(t) != len(self.layers) or any(
                    m.shape[-1] != layer.num_features for (m, _), layer in zip(t, self.layers))):
                raise TinysetError(f"{name} BN targets do not fit this teacher's BN layers (statistics of another network?)")
        self.ema_momentum = ema_momentum
        self.labels: torch.Tensor | None = None
        self.losses: list[torch.Tensor] = []
        self.class_terms: list[torch.Tensor] = []
        self._ema: dict[int, dict[str, torch.Tensor]] = {}
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def _smooth(self, i: int, name: str, value: torch.Tensor) -> torch.Tensor:
        """EMA across steps, straight-through: the value is the EMA, the gradient is the current
        batch's with weight 1 (as the reference). Plain ``m * prev + (1 - m) * value`` would scale
        the gradient by (1 - m) = 0.2, a 5x smaller effective r_bn. A matcher lives for one unit
        (``recover`` builds it), so the EMA starts afresh for every unit."""
        if self.ema_momentum is None:
            return value
        slot = self._ema.setdefault(i, {})
        prev = slot.get(name)
        cur = value.detach()
        ema = cur if prev is None else self.ema_momentum * prev + (1 - self.ema_momentum) * cur
        slot[name] = ema
        return value + (ema - cur)

    def _hook(self, i: int):
        def hook(module: nn.BatchNorm2d, inputs, output):
            x = inputs[0]
            m_i, s_i = _per_image_moments(x)
            mean = m_i.mean(0)
            var = (s_i.mean(0) - mean * mean).clamp_min(0)
            mean, var = self._smooth(i, "mean", mean), self._smooth(i, "var", var)
            if self.global_targets is None:
                gm, gv = module.running_mean, module.running_var
            else:
                gm, gv = (t.to(x.device) for t in self.global_targets[i])
            g = torch.norm(mean - gm, 2) + torch.norm(var - gv, 2)
            if self.class_targets is not None and self.labels is not None:
                v_i = (s_i - m_i * m_i).clamp_min(0)
                classes, inv = torch.unique(self.labels, return_inverse=True)
                onehot = torch.zeros(len(classes), x.shape[0], device=x.device)
                onehot[inv, torch.arange(x.shape[0], device=x.device)] = 1.0
                onehot = onehot / onehot.sum(1, keepdim=True)
                cm = self._smooth(i, "cmean", onehot @ m_i)
                cv = self._smooth(i, "cvar", onehot @ v_i)
                tm, tv = self.class_targets[i]
                tm, tv = tm.to(x.device)[classes], tv.to(x.device)[classes]
                c = (torch.norm(cm - tm, 2, dim=1) + torch.norm(cv - tv, 2, dim=1)).mean()
                self.class_terms.append(c.detach())
                g = 0.5 * g + 0.5 * c
            self.losses.append(self.weights[i] * g)

        return hook

    def start(self, labels: torch.Tensor | None = None) -> None:
        self.labels = labels
        self.losses = []
        self.class_terms: list[torch.Tensor] = []  # unweighted class-conditional terms (diagnostics)

    def loss(self) -> torch.Tensor:
        if not self.losses:
            return torch.zeros(())
        return torch.stack(self.losses).sum()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


View = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@torch.no_grad()
def bn_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, view: View | None = None, seed: int = 0,
    batch_size: int = 500, progress: bool = True,
) -> BNTargets:
    """One pass over the real training set, each batch through ``view`` (None = un-augmented): per
    BN layer, the pooled global mean/variance of the layer's input, and per class the mean of
    per-image channel means and of per-image spatial variances."""
    layers = bn_layers(teacher)
    K = ds.info.num_classes
    sums: list[torch.Tensor | None] = [None] * len(layers)  # [3, K, C]: sum m, sum v, sum E[x^2]
    labels_box: dict[str, torch.Tensor] = {}

    def make_hook(i):
        def hook(module, inputs, output):
            m, s = _per_image_moments(inputs[0])
            v = (s - m * m).clamp_min(0)
            onehot = torch.zeros(K, m.shape[0], device=m.device)
            onehot[labels_box["y"], torch.arange(m.shape[0], device=m.device)] = 1.0
            acc = torch.stack([onehot @ m, onehot @ v, onehot @ s]).double()
            sums[i] = acc if sums[i] is None else sums[i] + acc

        return hook

    g = generator(seed)
    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    counts = torch.zeros(K, dtype=torch.float64)
    try:
        chunks = torch.arange(len(ds.train)).split(batch_size)
        for idx in tqdm(chunks, desc="BN statistics", disable=not progress, leave=False):
            x, y = ds.train.get_batch(idx)
            if view is not None:
                x = view(x, g)
            labels_box["y"] = y.to(device)
            teacher(x.to(device))
            counts += torch.bincount(y, minlength=K).double()
    finally:
        for h in handles:
            h.remove()
    if not sums or sums[0] is None:
        return BNTargets([], [])
    cnt = counts.to(sums[0].device)
    per_class = cnt.clamp_min(1).view(1, K, 1)
    glob, cls = [], []
    for acc in sums:
        mean = acc[0].sum(0) / cnt.sum()
        var = (acc[2].sum(0) / cnt.sum() - mean * mean).clamp_min(0)
        glob.append((mean.float().cpu(), var.float().cpu()))
        c = acc / per_class
        cls.append((c[0].float().cpu(), c[1].float().cpu()))
    return BNTargets(glob, cls)


def class_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, batch_size: int = 500, progress: bool = True
) -> Stats:
    """Per class and BN layer, on un-augmented real images: the mean of per-image channel means and
    of per-image spatial variances of the layer's input (the ``"teacher"`` rule's class targets)."""
    return bn_statistics(teacher, ds, device, None, batch_size=batch_size, progress=progress).class_stats


BN_TARGET_RULES = ("view", "teacher")


def cached_bn_targets(
    teacher: nn.Module, ds: Dataset, device: torch.device, cache_dir: Path | None, rule: str = "view",
    view: View | None = None, view_spec: dict | None = None, class_stats: bool = True, progress: bool = True,
) -> tuple[BNTargets, float]:
    """The targets of ``rule`` for one teacher, the statistics cached in the teacher's folder under a
    versioned key of (dataset size and shape, view). Returns (targets, seconds spent computing now)."""
    if rule not in BN_TARGET_RULES:
        raise TinysetError(f"bn_targets must be one of {', '.join(BN_TARGET_RULES)}, not {rule!r}")
    if rule == "teacher":
        if not class_stats:
            return BNTargets(None, None), 0.0
        view, view_spec = None, None
    ident = {"version": BN_STATS_VERSION, "n_train": len(ds.train), "shape": list(ds.info.shape),
             "view": view_spec if view is not None else "none"}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"bn_stats_v{BN_STATS_VERSION}_{key}.pt" if cache_dir else None
    secs = 0.0
    if path and path.exists():
        saved = torch.load(path, weights_only=True)  # lists of tensors only: never unpickle code
        stats = BNTargets(saved["global_stats"], saved["class_stats"])
    else:
        t0 = time.perf_counter()
        stats = bn_statistics(teacher, ds, device, view, seed=derive_seed(0, "bn-stats", key), progress=progress)
        secs = time.perf_counter() - t0
        if path:
            from ..models.checkpoint import atomic_torch_save

            atomic_torch_save({"global_stats": stats.global_stats, "class_stats": stats.class_stats}, path)
            (path.with_suffix(".json")).write_text(json.dumps({**ident, "seconds": secs}, default=str))
        log.info("BN statistics (%s): %d layers in %.1fs", ident["view"], len(stats.class_stats), secs)
    glob = stats.global_stats if rule == "view" else None
    return BNTargets(glob, stats.class_stats if class_stats else None), secs


def cached_class_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, cache_dir: Path | None, progress: bool = True
) -> tuple[Stats, float]:
    """Un-augmented class statistics, cached beside the teacher. Returns (stats, seconds spent now)."""
    t, secs = cached_bn_targets(teacher, ds, device, cache_dir, "teacher", progress=progress)
    return t.class_stats, secs
