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
- ``"crop"`` (E2D's reference recovery): running statistics for the global BN term; every other
  target (class statistics, Conv2d-input statistics) from one pass over real images under a
  random-resized crop of ``stats_crop_scale`` (0.08-1 there) + flip, whatever view the loop feeds.

The class-conditional term (``class_target``) matches like with like, in one of two forms:
- ``"per_image"`` (default): per class present in the batch, per-image channel means and per-image
  spatial variances averaged over the batch's images of that class, against the same averages over
  the class's real images.
- ``"pooled"`` (the reference's structure): the batch's pooled mean/variance (the same numbers the
  global term uses) against the statistics pooled over the labels of the batch: the mixture of the
  batch's classes weighted by their counts, its variance from the classes' pooled first and second
  moments. The reference compares the pooled batch variance with a mean of per-image variances,
  which real data never reaches (its term on real batches sat near 60 while synthesis drove it to
  30); here real batches of the same classes score near zero.
The global term compares pooled batch mean/variance with pooled population mean/variance.

Conv2d inputs (``match_conv``, E2D's reference): beside every BN input, the input of every Conv2d
layer is matched too: channel mean/variance and *patch* mean/variance, a patch statistic being the
mean/variance over the channels and pixels of one ``patch`` x ``patch`` cell of the input, pooled
over the batch (one value per cell). Half of each layer's term is global, half class-aware, as for
BN layers; the first matched layer in module order (the first conv: the raw image) takes
``first_multiplier``. Where tinyset differs from the reference on purpose: the reference resizes a
map whose side is not a multiple of 16 bilinearly up to one (an 8x8 map becomes one interpolated
16x16 cell); here the side is split into ceil(side / patch) near-equal blocks of its own pixels (an
8x8 map is one 8x8 cell), so no interpolation changes the statistics being matched. The
reference also saves the class patch mean and variance under each other's names; here each is
what its name says.

The statistics and their distances are computed in float32, also under bf16 autocast. Cached
files are keyed by what they hold: the default structure keeps its key (and its files); Conv2d
statistics (with their patch size) and pooled class moments each add to the key."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from ..utils.progress import progress_bar as tqdm  # tqdm on a terminal, log lines otherwise
from ..utils.digest import json_digest

from ..data.base import Dataset
from ..errors import TinysetError
from ..utils.seeding import derive_seed, generator

log = logging.getLogger(__name__)

# Bump when what the statistics pass computes changes: the cache key carries it.
# v1: class_stats_<n>.pt (un-augmented class statistics only); v2: global + class, per view.
BN_STATS_VERSION = 3  # 3: the cache file holds tensors only (loaded with weights_only=True)

Stats = list[tuple[torch.Tensor, torch.Tensor]]  # per BN layer: (mean, var)
# per Conv2d layer: named statistics of its input (see ``bn_statistics``): global "mean", "var",
# "pmean", "pvar"; per class [K, ...] "class_mean", "class_var", "class_sq", "class_pmean",
# "class_pvar", "class_psq" (var: mean of per-image variances; sq: mean of E[x^2], for pooling)
ConvStats = list[dict[str, torch.Tensor]]
CLASS_TARGETS = ("per_image", "pooled")
_GLOBAL_KEYS = ("mean", "var", "pmean", "pvar")


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def matched_sites(model: nn.Module, conv: bool = False) -> list[tuple[str, int, nn.Module]]:
    """The layers whose inputs are matched, in module order: ("bn" | "conv", index among its kind, layer)."""
    sites: list[tuple[str, int, nn.Module]] = []
    counts = {"bn": 0, "conv": 0}
    for m in model.modules():
        kind = "bn" if isinstance(m, nn.BatchNorm2d) else "conv" if conv and isinstance(m, nn.Conv2d) else None
        if kind:
            sites.append((kind, counts[kind], m))
            counts[kind] += 1
    return sites


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


@lru_cache(maxsize=64)
def _cells(size: int, patch: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """[k, size]: ``size`` consecutive rows (or columns) split into k = ceil(size / patch) near-equal
    blocks, each row of a block weighted 1 / the block's size (a block average is one matmul)."""
    k = max(1, -(-size // patch))
    block = (torch.arange(size) * k) // size
    w = torch.zeros(k, size, dtype=torch.float64)
    w[block, torch.arange(size)] = 1.0
    return (w / w.sum(1, keepdim=True)).to(device=device, dtype=dtype)


def _grid(h: int, w: int, patch: int) -> tuple[int, int, bool]:
    """(cell rows, cell columns, whether the cells are equal blocks) of an h x w map."""
    u, v = max(1, -(-h // patch)), max(1, -(-w // patch))
    return u, v, h % u == 0 and w % v == 0


def _cell_mean(t: torch.Tensor, u: int, v: int, equal: bool) -> torch.Tensor:
    """[N, H, W] -> [N, u * v]: the mean of each cell."""
    n, h, w = t.shape
    if equal:
        return t.reshape(n, u, h // u, v, w // v).mean(dim=(2, 4)).reshape(n, u * v)
    rows, cols = _cells(h, -(-h // u), str(t.device), t.dtype), _cells(w, -(-w // v), str(t.device), t.dtype)
    return torch.einsum("uh,nhw,vw->nuv", rows, t, cols).reshape(n, u * v)


def _cell_spread(g: torch.Tensor, h: int, w: int, u: int, v: int, equal: bool) -> torch.Tensor:
    """[N, u * v] -> [N, 1, H, W]: the gradient of ``_cell_mean``."""
    n = g.shape[0]
    if equal:
        a, b = h // u, w // v
        return (g.view(n, u, 1, v, 1) / (a * b)).expand(n, u, a, v, b).reshape(n, 1, h, w)
    rows, cols = _cells(h, -(-h // u), str(g.device), g.dtype), _cells(w, -(-w // v), str(g.device), g.dtype)
    return torch.einsum("uh,nuv,vw->nhw", rows, g.view(n, u, v), cols).unsqueeze(1)


class _ConvMoments(torch.autograd.Function):
    """Per-image channel moments and per-image patch moments of a Conv2d input, with a one-pass backward.

    Channel: E[x], E[x^2] over the pixels of each channel, [N, C]. Patch: E[x], E[x^2] over the
    channels and pixels of each cell of a grid of ``patch``-pixel cells (row-major), [N, P]. The
    gradient is dL/dx = g_m / HW + G_pm / C + 2 x (g_s / HW + G_ps / C), each G the cell gradient
    spread evenly over its cell's pixels: one ``addcmul`` in x's memory format (a map of one cell
    adds nothing activation-sized)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, patch: int):
        n, c, h, w = x.shape
        sq = x * x
        rows = None
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            rows, rsq = x.permute(0, 2, 3, 1).reshape(n, -1, c), sq.permute(0, 2, 3, 1).reshape(n, -1, c)  # views
            m, s = rows.mean(1), rsq.mean(1)
        else:
            m, s = x.mean(dim=(2, 3)), sq.mean(dim=(2, 3))
        if patch <= 0:
            pm = ps = x.new_zeros(n, 0)
        else:
            u, v, equal = _grid(h, w, patch)
            if u * v == 1:
                pm, ps = m.mean(1, keepdim=True), s.mean(1, keepdim=True)
            else:
                if rows is not None:  # a channel average over the innermost dim: one gemv (a reduction over 3 is slow)
                    avg = x.new_full((c,), 1.0 / c)
                    cmap, csq = (rows @ avg).view(n, h, w), (rsq @ avg).view(n, h, w)
                else:
                    cmap, csq = x.mean(1), sq.mean(1)
                pm, ps = _cell_mean(cmap, u, v, equal), _cell_mean(csq, u, v, equal)
        ctx.save_for_backward(x)
        ctx.patch = patch
        return m, s, pm, ps

    @staticmethod
    def backward(ctx, g_m, g_s, g_pm, g_ps):
        (x,) = ctx.saved_tensors
        n, c, h, w = x.shape
        hw = h * w
        g_m = x.new_zeros(n, c) if g_m is None else g_m
        g_s = x.new_zeros(n, c) if g_s is None else g_s
        a = (g_m / hw).view(n, c, 1, 1)
        b = (g_s * (2.0 / hw)).view(n, c, 1, 1)
        if ctx.patch <= 0 or (g_pm is None and g_ps is None):
            return torch.addcmul(a, x, b), None
        g_pm = x.new_zeros(n, g_pm.shape[1] if g_pm is not None else g_ps.shape[1]) if g_pm is None else g_pm
        g_ps = torch.zeros_like(g_pm) if g_ps is None else g_ps
        u, v, equal = _grid(h, w, ctx.patch)
        if u * v == 1:  # one cell: the patch moments are channel averages of the channel moments
            a = a + (g_pm / (c * hw)).view(n, 1, 1, 1)
            b = b + (g_ps * (2.0 / (c * hw))).view(n, 1, 1, 1)
            return torch.addcmul(a, x, b), None
        a_full, b_full = torch.empty_like(x), torch.empty_like(x)
        torch.add(a, _cell_spread(g_pm / c, h, w, u, v, equal), out=a_full)
        torch.add(b, _cell_spread(g_ps * (2.0 / c), h, w, u, v, equal), out=b_full)
        return a_full.addcmul_(x, b_full), None


def _conv_moments(x: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image channel moments [N, C] and patch moments [N, P] of a Conv2d input (float32)."""
    return _ConvMoments.apply(x.float(), int(patch))


def _per_image_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, s = _per_image_moments(x)
    return m, (s - m * m).clamp_min(0)


@dataclass
class BNTargets:
    """What one teacher's layers are matched against. ``global_stats`` None = running statistics.

    ``class_stats`` (class_target="per_image") and ``class_moments`` (class_target="pooled") are the
    two forms of the class-conditional targets, at most one of them set; ``conv_stats`` (match_conv)
    holds every Conv2d input's global and class statistics, measured with cells of ``conv_patch``."""

    global_stats: Stats | None = None
    class_stats: Stats | None = None
    class_moments: Stats | None = None  # per BN layer: (class mean [K, C], class mean of E[x^2] [K, C])
    conv_stats: ConvStats | None = None
    conv_patch: int | None = None


class BNMatcher:
    """Forward hooks on a teacher's BN layers (and, with ``conv_targets``, its Conv2d layers) that
    accumulate the matching loss of the last forward.

    ``ema_state``: a dict owned by the caller that the statistics EMA lives in; passing the same dict
    to the next unit's matcher carries the EMA of the batch's pooled statistics across sub-batches
    (E2D's reference never resets it). Per-class EMAs (class_target="per_image") always start afresh:
    they belong to one unit's classes."""

    def __init__(
        self,
        model: nn.Module,
        first_multiplier: float = 10.0,
        class_targets: Stats | None = None,
        ema_momentum: float | None = None,
        global_targets: Stats | None = None,
        *,
        class_moments: Stats | None = None,
        conv_targets: ConvStats | None = None,
        conv_patch: int = 16,
        ema_state: dict | None = None,
    ):
        if class_targets is not None and class_moments is not None:
            raise TinysetError("give per-image class statistics or pooled class moments, not both")
        self.layers = bn_layers(model)
        self.convs = conv_layers(model) if conv_targets is not None else []
        self.sites = matched_sites(model, conv_targets is not None)
        # the first matched layer in module order: the first BN, or with conv matching the first conv (the image)
        self.weights = [first_multiplier if j == 0 else 1.0 for j in range(len(self.sites))]
        self.class_targets = class_targets  # per layer: (mean [K, C], var [K, C])
        self.class_moments = class_moments  # per layer: (mean [K, C], E[x^2] [K, C])
        self.global_targets = global_targets  # per layer: (mean [C], var [C]); None = running statistics
        self.conv_targets = conv_targets
        self.conv_patch = int(conv_patch)
        self.class_on = class_targets is not None or class_moments is not None
        for name, t in (("class", class_targets), ("class", class_moments), ("global", global_targets)):
            if t is not None and (len(t) != len(self.layers) or any(
                    m.shape[-1] != layer.num_features for (m, _), layer in zip(t, self.layers))):
                raise TinysetError(f"{name} BN targets do not fit this teacher's BN layers (statistics of another network?)")
        if conv_targets is not None:
            need = _GLOBAL_KEYS + (("class_mean", "class_pmean") + (("class_var", "class_pvar") if class_targets is not None
                                                                     else ("class_sq", "class_psq")) if self.class_on else ())
            if len(conv_targets) != len(self.convs) or any(
                    t["mean"].shape[-1] != conv.in_channels or any(k not in t for k in need)
                    for t, conv in zip(conv_targets, self.convs)):
                raise TinysetError("conv targets do not fit this teacher's Conv2d layers (statistics of another network?)")
        self.ema_momentum = ema_momentum
        self.labels: torch.Tensor | None = None
        self.losses: list[torch.Tensor] = []
        self.class_terms: list[torch.Tensor] = []
        self._ema: dict[int, dict[str, torch.Tensor]] = {} if ema_state is None else ema_state
        for slot in self._ema.values():
            for k in [k for k in slot if k.startswith("c")]:
                del slot[k]
        self._handles = [layer.register_forward_hook(self._hook(j)) for j, (_, _, layer) in enumerate(self.sites)]

    def _smooth(self, i: int, name: str, value: torch.Tensor) -> torch.Tensor:
        """EMA across steps, straight-through: the value is the EMA, the gradient is the current
        batch's with weight 1 (as the reference). Plain ``m * prev + (1 - m) * value`` would scale
        the gradient by (1 - m) = 0.2, a 5x smaller effective r_bn. The EMA starts from the first
        batch's value (the reference starts it from 0, so its first steps see 0.2x the statistics).
        A matcher lives for one unit (``recover`` builds it), so the EMA starts afresh for every unit
        unless the caller hands the same ``ema_state`` on."""
        if self.ema_momentum is None:
            return value
        slot = self._ema.setdefault(i, {})
        prev = slot.get(name)
        cur = value.detach()
        ema = cur if prev is None or prev.shape != cur.shape else self.ema_momentum * prev + (1 - self.ema_momentum) * cur
        slot[name] = ema
        return value + (ema - cur)

    def _hook(self, j: int):
        kind, i, _ = self.sites[j]

        def hook(module: nn.Module, inputs, output):
            # statistics and their distances in float32 even under bf16 autocast (its matmuls would run in bf16)
            with torch.autocast(inputs[0].device.type, enabled=False):
                self._site_loss(j, kind, i, module, inputs[0])

        return hook

    def _site_loss(self, j: int, kind: str, i: int, module: nn.Module, x: torch.Tensor) -> None:
        if kind == "bn":
            m_i, s_i = _per_image_moments(x)
            pm_i = ps_i = None
        else:
            m_i, s_i, pm_i, ps_i = _conv_moments(x, self.conv_patch)
        mean = m_i.mean(0)
        var = (s_i.mean(0) - mean * mean).clamp_min(0)
        mean, var = self._smooth(j, "mean", mean), self._smooth(j, "var", var)
        if kind == "bn":
            if self.global_targets is None:
                gm, gv = module.running_mean, module.running_var
            else:
                gm, gv = (t.to(x.device) for t in self.global_targets[i])
            g = torch.norm(mean - gm, 2) + torch.norm(var - gv, 2)
        else:
            t = {k: v.to(x.device) for k, v in self.conv_targets[i].items()}
            pmean = pm_i.mean(0)
            pvar = (ps_i.mean(0) - pmean * pmean).clamp_min(0)
            pmean, pvar = self._smooth(j, "pmean", pmean), self._smooth(j, "pvar", pvar)
            g = (torch.norm(mean - t["mean"], 2) + torch.norm(var - t["var"], 2)
                 + torch.norm(pmean - t["pmean"], 2) + torch.norm(pvar - t["pvar"], 2))
        if self.class_on and self.labels is not None:
            if self.class_moments is not None:  # pooled: the batch against the mixture of its labels
                if kind == "bn":
                    tm, tsq = (v.to(x.device) for v in self.class_moments[i])
                else:
                    tm, tsq = t["class_mean"], t["class_sq"]
                wts = torch.bincount(self.labels, minlength=tm.shape[0]).to(tm.dtype) / len(self.labels)
                cm = wts @ tm
                c = torch.norm(mean - cm, 2) + torch.norm(var - (wts @ tsq - cm * cm).clamp_min(0), 2)
                if kind == "conv":
                    cpm = wts @ t["class_pmean"]
                    c = c + torch.norm(pmean - cpm, 2) + torch.norm(
                        pvar - (wts @ t["class_psq"] - cpm * cpm).clamp_min(0), 2)
            else:  # per image: each class present, mean of its images' per-image statistics
                v_i = (s_i - m_i * m_i).clamp_min(0)
                classes, inv = torch.unique(self.labels, return_inverse=True)
                onehot = torch.zeros(len(classes), x.shape[0], device=x.device)
                onehot[inv, torch.arange(x.shape[0], device=x.device)] = 1.0
                onehot = onehot / onehot.sum(1, keepdim=True)
                cm = self._smooth(j, "cmean", onehot @ m_i)
                cv = self._smooth(j, "cvar", onehot @ v_i)
                if kind == "bn":
                    tm, tv = self.class_targets[i]
                    tm, tv = tm.to(x.device)[classes], tv.to(x.device)[classes]
                    c = (torch.norm(cm - tm, 2, dim=1) + torch.norm(cv - tv, 2, dim=1)).mean()
                else:
                    pv_i = (ps_i - pm_i * pm_i).clamp_min(0)
                    cpm = self._smooth(j, "cpmean", onehot @ pm_i)
                    cpv = self._smooth(j, "cpvar", onehot @ pv_i)
                    c = (torch.norm(cm - t["class_mean"][classes], 2, dim=1) + torch.norm(cv - t["class_var"][classes], 2, dim=1)
                         + torch.norm(cpm - t["class_pmean"][classes], 2, dim=1)
                         + torch.norm(cpv - t["class_pvar"][classes], 2, dim=1)).mean()
            self.class_terms.append(c.detach())
            g = 0.5 * g + 0.5 * c
        self.losses.append(self.weights[j] * g)

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
    batch_size: int = 500, progress: bool = True, conv_patch: int | None = None,
) -> BNTargets:
    """One pass over the real training set, each batch through ``view`` (None = un-augmented): per
    BN layer, the pooled global mean/variance of the layer's input, and per class the mean of
    per-image channel means, of per-image spatial variances and of per-image second moments (the
    class's pooled E[x^2]). With ``conv_patch`` (an int; 0 = channel statistics only), the same for
    every Conv2d input, its patch statistics included (``ConvStats``)."""
    layers = bn_layers(teacher)
    convs = conv_layers(teacher) if conv_patch is not None else []
    K = ds.info.num_classes
    sums: list[torch.Tensor | None] = [None] * len(layers)  # [3, K, C]: sum m, sum v, sum E[x^2]
    conv_sums: list[torch.Tensor | None] = [None] * len(convs)  # [K, 3C + 3P]: m, s, v, pm, ps, pv
    conv_sizes: list[tuple[int, int]] = [(0, 0)] * len(convs)  # (C, P)
    labels_box: dict[str, torch.Tensor] = {}

    def onehot_of(n: int, dev: torch.device) -> torch.Tensor:
        onehot = torch.zeros(K, n, device=dev)
        onehot[labels_box["y"], torch.arange(n, device=dev)] = 1.0
        return onehot

    def make_hook(i):
        def hook(module, inputs, output):
            m, s = _per_image_moments(inputs[0])
            v = (s - m * m).clamp_min(0)
            onehot = onehot_of(m.shape[0], m.device)
            acc = torch.stack([onehot @ m, onehot @ v, onehot @ s]).double()
            sums[i] = acc if sums[i] is None else sums[i] + acc

        return hook

    def make_conv_hook(i):
        def hook(module, inputs, output):
            m, s, pm, ps = _conv_moments(inputs[0], conv_patch)
            feats = torch.cat([m, s, (s - m * m).clamp_min(0), pm, ps, (ps - pm * pm).clamp_min(0)], 1)
            acc = (onehot_of(m.shape[0], m.device) @ feats).double()
            conv_sizes[i] = (m.shape[1], pm.shape[1])
            conv_sums[i] = acc if conv_sums[i] is None else conv_sums[i] + acc

        return hook

    g = generator(seed)
    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    handles += [conv.register_forward_hook(make_conv_hook(i)) for i, conv in enumerate(convs)]
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
    conv_out: ConvStats | None = None
    if conv_patch is not None:
        conv_out = []
        for acc, (C, P) in zip(conv_sums, conv_sizes):
            cnt = counts.to(acc.device)
            tot = acc.sum(0) / cnt.sum()
            per = acc / cnt.clamp_min(1).view(K, 1)
            m, s, v, pm, ps, pv = torch.split(per, [C, C, C, P, P, P], 1)
            gm, gs, _, gpm, gps, _ = torch.split(tot, [C, C, C, P, P, P], 0)
            out = {"mean": gm, "var": (gs - gm * gm).clamp_min(0), "pmean": gpm, "pvar": (gps - gpm * gpm).clamp_min(0),
                   "class_mean": m, "class_var": v, "class_sq": s, "class_pmean": pm, "class_pvar": pv, "class_psq": ps}
            conv_out.append({k: t.float().cpu().contiguous() for k, t in out.items()})
    if not sums or sums[0] is None:
        return BNTargets([], [], [], conv_out, conv_patch)
    cnt = counts.to(sums[0].device)
    per_class = cnt.clamp_min(1).view(1, K, 1)
    glob, cls, mom = [], [], []
    for acc in sums:
        mean = acc[0].sum(0) / cnt.sum()
        var = (acc[2].sum(0) / cnt.sum() - mean * mean).clamp_min(0)
        glob.append((mean.float().cpu(), var.float().cpu()))
        c = acc / per_class
        cls.append((c[0].float().cpu(), c[1].float().cpu()))
        mom.append((c[0].float().cpu(), c[2].float().cpu()))
    return BNTargets(glob, cls, mom, conv_out, conv_patch)


def class_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, batch_size: int = 500, progress: bool = True
) -> Stats:
    """Per class and BN layer, on un-augmented real images: the mean of per-image channel means and
    of per-image spatial variances of the layer's input (the ``"teacher"`` rule's class targets)."""
    return bn_statistics(teacher, ds, device, None, batch_size=batch_size, progress=progress).class_stats


BN_TARGET_RULES = ("view", "teacher", "crop")


def cached_bn_targets(
    teacher: nn.Module, ds: Dataset, device: torch.device, cache_dir: Path | None, rule: str = "view",
    view: View | None = None, view_spec: dict | None = None, class_stats: bool = True, progress: bool = True,
    conv_patch: int | None = None, class_target: str = "per_image",
) -> tuple[BNTargets, float]:
    """The targets of ``rule`` for one teacher, the statistics cached in the teacher's folder under a
    versioned key of (dataset size and shape, view, and what the file holds beyond the default:
    Conv2d-input statistics with their patch size, pooled class moments). Returns (targets,
    seconds spent computing now). ``rule="crop"`` takes the crop view as ``view``/``view_spec``."""
    if rule not in BN_TARGET_RULES:
        raise TinysetError(f"bn_targets must be one of {', '.join(BN_TARGET_RULES)}, not {rule!r}")
    if class_target not in CLASS_TARGETS:
        raise TinysetError(f"class_target must be one of {', '.join(CLASS_TARGETS)}, not {class_target!r}")
    pooled = class_target == "pooled" and class_stats
    if rule in ("teacher", "crop") and not class_stats and conv_patch is None:
        return BNTargets(None, None), 0.0  # running statistics only: nothing to measure
    if rule == "teacher":
        view, view_spec = None, None
    if rule == "crop" and view is None:
        raise TinysetError("bn_targets='crop' measures its targets under a crop view; none was given")
    ident = {"version": BN_STATS_VERSION, "n_train": len(ds.train), "shape": list(ds.info.shape),
             "view": view_spec if view is not None else "none"}
    if conv_patch is not None:  # the default key stays as it was: its cached files keep serving
        ident["conv_patch"] = int(conv_patch)
    if pooled:
        ident["class_moments"] = True
    key = json_digest(ident)
    path = Path(cache_dir) / f"bn_stats_v{BN_STATS_VERSION}_{key}.pt" if cache_dir else None
    secs = 0.0
    if path and path.exists():
        saved = torch.load(path, weights_only=True)  # lists of tensors only: never unpickle code
        stats = BNTargets(saved["global_stats"], saved["class_stats"], saved.get("class_moments"), saved.get("conv_stats"),
                          conv_patch)
    else:
        t0 = time.perf_counter()
        stats = bn_statistics(teacher, ds, device, view, seed=derive_seed(0, "bn-stats", key), progress=progress,
                              conv_patch=conv_patch)
        secs = time.perf_counter() - t0
        if path:
            from ..models.checkpoint import atomic_torch_save

            blob = {"global_stats": stats.global_stats, "class_stats": stats.class_stats}
            if pooled:
                blob["class_moments"] = stats.class_moments
            if conv_patch is not None:
                blob["conv_stats"] = stats.conv_stats
            atomic_torch_save(blob, path)
            (path.with_suffix(".json")).write_text(json.dumps({**ident, "seconds": secs}, default=str))
        log.info("BN statistics (%s): %d layers in %.1fs", ident["view"], len(stats.class_stats), secs)
    glob = stats.global_stats if rule == "view" else None
    conv = None
    if conv_patch is not None:
        keep = _GLOBAL_KEYS + ((("class_mean", "class_sq", "class_pmean", "class_psq") if pooled else
                                ("class_mean", "class_var", "class_pmean", "class_pvar")) if class_stats else ())
        conv = [{k: t[k] for k in keep} for t in stats.conv_stats]
    return BNTargets(glob, stats.class_stats if class_stats and not pooled else None,
                     stats.class_moments if pooled else None, conv, conv_patch), secs


def cached_class_statistics(
    teacher: nn.Module, ds: Dataset, device: torch.device, cache_dir: Path | None, progress: bool = True
) -> tuple[Stats, float]:
    """Un-augmented class statistics, cached beside the teacher. Returns (stats, seconds spent now)."""
    t, secs = cached_bn_targets(teacher, ds, device, cache_dir, "teacher", progress=progress)
    return t.class_stats, secs
