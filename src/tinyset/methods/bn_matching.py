"""BatchNorm-statistics matching: the regulariser of SRe2L-style recovery.

For every BatchNorm2d layer of a frozen teacher, the L2 distance between the statistics of the
batch's input to that layer and a target: the layer's running statistics (global), and optionally
per-class statistics gathered from real images (class-conditional). The class-conditional term
matches like with like: per-image channel means and per-image spatial variances, averaged over the
images of a class, on both sides, so a batch of real images of a class scores near zero (the
reference compares a pooled batch variance with a mean of per-image variances, which real data never
reaches)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn
from ..utils.progress import progress_bar as tqdm  # tqdm on a terminal, log lines otherwise

from ..data.base import Dataset

log = logging.getLogger(__name__)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def _per_image_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image channel means E[x] and second moments E[x^2], each [N, C], in one pass.

    Every statistic the matcher needs derives from these two: global mean/var (average over
    images; the images have equal sizes) and per-image variances. One pass over the activation
    instead of four reductions, and on channels_last input a free (N, HW, C) view, matters: on
    ConvNet-3 the first BN layer's input is the largest tensor of the whole forward."""
    x = x.float()
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        rows = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])  # a view, no copy
        return rows.mean(1), (rows * rows).mean(1)
    return x.mean(dim=(2, 3)), (x * x).mean(dim=(2, 3))


def _per_image_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, s = _per_image_moments(x)
    return m, (s - m * m).clamp_min(0)


class BNMatcher:
    """Forward hooks on a teacher's BN layers that accumulate the matching loss of the last forward."""

    def __init__(
        self,
        model: nn.Module,
        first_multiplier: float = 10.0,
        class_targets: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        ema_momentum: float | None = None,
    ):
        self.layers = bn_layers(model)
        self.weights = [first_multiplier if i == 0 else 1.0 for i in range(len(self.layers))]
        self.class_targets = class_targets  # per layer: (mean [K, C], var [K, C])
        self.ema_momentum = ema_momentum
        self.labels: torch.Tensor | None = None
        self.losses: list[torch.Tensor] = []
        self.class_terms: list[torch.Tensor] = []
        self._ema: dict[int, dict[str, torch.Tensor]] = {}
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def reset(self) -> None:
        """Forget the EMA of batch statistics: called at the start of every unit (sub-batch)."""
        self._ema.clear()

    def _smooth(self, i: int, name: str, value: torch.Tensor) -> torch.Tensor:
        # EMA across steps; the gradient flows through the current batch only.
        if self.ema_momentum is None:
            return value
        slot = self._ema.setdefault(i, {})
        prev = slot.get(name)
        out = value if prev is None else self.ema_momentum * prev + (1 - self.ema_momentum) * value
        slot[name] = out.detach()
        return out

    def _hook(self, i: int):
        def hook(module: nn.BatchNorm2d, inputs, output):
            x = inputs[0]
            m_i, s_i = _per_image_moments(x)
            mean = m_i.mean(0)
            var = (s_i.mean(0) - mean * mean).clamp_min(0)
            mean, var = self._smooth(i, "mean", mean), self._smooth(i, "var", var)
            g = torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2)
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


@torch.no_grad()
def class_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, batch_size: int = 500, progress: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over the real training set: per class and BN layer, the mean of per-image channel
    means and of per-image spatial variances of the layer's input."""
    layers = bn_layers(teacher)
    K = ds.info.num_classes
    sums = [None] * len(layers)
    labels_box: dict[str, torch.Tensor] = {}

    def make_hook(i):
        def hook(module, inputs, output):
            m, v = _per_image_stats(inputs[0])
            onehot = torch.zeros(K, m.shape[0], device=m.device)
            onehot[labels_box["y"], torch.arange(m.shape[0], device=m.device)] = 1.0
            s = torch.stack([onehot @ m, onehot @ v]).double()
            sums[i] = s if sums[i] is None else sums[i] + s

        return hook

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    counts = torch.zeros(K, dtype=torch.float64)
    try:
        chunks = torch.arange(len(ds.train)).split(batch_size)
        for idx in tqdm(chunks, desc="class statistics", disable=not progress, leave=False):
            x, y = ds.train.get_batch(idx)
            labels_box["y"] = y.to(device)
            teacher(x.to(device))
            counts += torch.bincount(y, minlength=K).double()
    finally:
        for h in handles:
            h.remove()
    denom = counts.clamp_min(1).view(1, K, 1).to(sums[0].device) if sums else None
    return [((s / denom)[0].float().cpu(), (s / denom)[1].float().cpu()) for s in sums]


def cached_class_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, cache_dir: Path | None, progress: bool = True
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """Class statistics, cached beside the teacher. Returns (stats, seconds spent computing them now)."""
    path = Path(cache_dir) / f"class_stats_{len(ds.train)}.pt" if cache_dir else None
    if path and path.exists():
        return torch.load(path, weights_only=True), 0.0  # tensors only: never unpickle code
    t0 = time.perf_counter()
    stats = class_statistics(teacher, ds, device, progress=progress)
    secs = time.perf_counter() - t0
    if path:
        from ..models.checkpoint import atomic_torch_save

        atomic_torch_save(stats, path)
    log.info("class statistics: %d layers in %.1fs", len(stats), secs)
    return stats, secs
