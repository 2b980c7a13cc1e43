"""The shared recovery loop: synthesise images by inverting a frozen teacher.

The pixels (in the dataset's normalised units) are the parameters. Each step feeds one augmented view of every image through the
teacher and minimises CE(teacher(view), class) + r_bn * sum_l w_l R_l (BN-statistics matching), with
Adam (betas 0.5, 0.9), a cosine lr over the budget, and pixels clamped to the valid range after every step.
The last iterate is kept. SRe2L and E2D differ only in the start and in the *view policy* (which
crop feeds the loss); E2D's policy also stops the loop early."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import augment as A
from ..quant.inloop import LoopQuantizer, QuantizerConfig
from .base import MethodContext
from .bn_matching import BNMatcher
from .crop_memory import CropMemory

log = logging.getLogger(__name__)


@dataclass
class RecoveryConfig:
    iterations: int = 1000
    lr: float = 0.25
    betas: tuple[float, float] = (0.5, 0.9)
    r_bn: float = 0.01
    first_bn_multiplier: float = 10.0
    class_stats: bool = False  # class-conditional BN statistics beside the global ones, half weight each
    stats_ema: float | None = None  # EMA momentum of batch statistics across steps (0.8 in EDC/E2D)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    batch_size: int = 100  # images optimised together (classes x slots)
    log_every: int = 50
    # QuADD: every view is cut from Q(latent); one clip per image so units merge into one set
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(granularity="image"))


class ViewPolicy:
    """Chooses the view of the images that feeds the loss at each step."""

    def view(self, x: torch.Tensor, it: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def observe(self, it: int, boxes: torch.Tensor, ce: torch.Tensor) -> bool:
        """See the per-sample CE of the step; return True to stop early."""
        return False

    def stats(self) -> dict:
        return {}

    def log_fields(self) -> dict:
        """Extra numbers for each logged step of ``log.jsonl`` (the report draws them)."""
        return {}


class SharedCropPolicy(ViewPolicy):
    """SRe2L: one random-resized-crop box for the whole batch after a random shift (jitter)."""

    def __init__(self, scale: tuple[float, float], jitter: int, flip: bool = True):
        self.scale, self.jitter, self.flip = scale, jitter, flip

    def view(self, x, it, g):
        n, _, h, w = x.shape
        if self.jitter:
            dx, dy = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        box = A.sample_rrc_boxes(1, h, w, self.scale, generator=g).expand(n, 4)
        flips = (torch.rand(1, generator=g) < 0.5).expand(n) if self.flip else None
        return A.crop_resize(x, box, (h, w), flips), box


class RandomCropPolicy(ViewPolicy):
    """An independent random-resized crop per image (E2D's exploration; E2D without memory)."""

    def __init__(self, scale: tuple[float, float], flip: bool = True):
        self.scale, self.flip = scale, flip

    def boxes(self, n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
        return A.sample_rrc_boxes(n, h, w, self.scale, generator=g)

    def view(self, x, it, g):
        n, _, h, w = x.shape
        boxes = self.boxes(n, h, w, g)
        flips = torch.rand(n, generator=g) < 0.5 if self.flip else None
        return A.crop_resize(x, boxes, (h, w), flips), boxes


class ExploreExploitPolicy(RandomCropPolicy):
    """E2D: explore with uniform random crops for ``explore_steps`` steps, remembering crops whose CE
    exceeds eps; then exploit, sampling remembered crops by softmax of their loss until each is
    solved; stop when every memory is empty."""

    def __init__(self, n: int, scale, explore_steps: int, eps: float, flip: bool = True):
        super().__init__(scale, flip)
        self.explore_steps = explore_steps
        self.memory = CropMemory(n, eps)
        self._slots: list[int | None] = [None] * n
        self.stopped_at: int | None = None

    def view(self, x, it, g):
        n, _, h, w = x.shape
        boxes = self.boxes(n, h, w, g)
        self._slots = [None] * n
        if it >= self.explore_steps:
            for i in range(n):
                if self.memory.size(i):
                    slot = self.memory.sample(i, g)
                    self._slots[i] = slot
                    boxes[i] = torch.tensor(self.memory.boxes[i][slot])
        flips = torch.rand(n, generator=g) < 0.5 if self.flip else None
        return A.crop_resize(x, boxes, (h, w), flips), boxes

    def observe(self, it, boxes, ce):
        if it < self.explore_steps:
            self.memory.remember(boxes, ce)
        else:
            # update in descending slot order is unnecessary: one slot per image per step
            for i, slot in enumerate(self._slots):
                if slot is not None:
                    self.memory.update(i, slot, float(ce[i]))
        if it >= self.explore_steps - 1 and self.memory.all_empty():
            self.stopped_at = it + 1
            return True
        return False

    def stats(self):
        return {"crops_stored": self.memory.stored_total, "crops_left": len(self.memory), "stopped_at": self.stopped_at}

    def log_fields(self):
        return {"crops_in_memory": len(self.memory)}  # the report's crop-memory curve


def recover(
    x0: torch.Tensor,
    labels: torch.Tensor,
    cfg: RecoveryConfig,
    policy: ViewPolicy,
    ctx: MethodContext,
    g: torch.Generator,
    class_targets=None,
    desc: str = "recover",
) -> tuple[torch.Tensor, dict]:
    """Run the loop on one unit. Returns the last iterate (on CPU) and bookkeeping."""
    dev = ctx.device
    teachers = [ctx.teacher] + list(ctx.teachers)
    matchers = [BNMatcher(t, cfg.first_bn_multiplier, class_targets, cfg.stats_ema) for t in teachers]
    # The optimised tensor is the image in the dataset's normalised units, as in the reference codes,
    # so their learning rates mean the same here (Adam's step size is in the parameter's units: in
    # [0, 1] pixels the same lr would move CIFAR pixels ~4x further per step).
    info = ctx.dataset.info
    mean = torch.tensor(info.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=dev).view(1, -1, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std  # the valid pixel range [0, 1], normalised
    z = ((x0.detach().to(dev) - mean) / std).clone()
    if ctx.channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    z.requires_grad_(True)
    y = labels.to(dev)
    opt = torch.optim.Adam([z], lr=cfg.lr, betas=tuple(cfg.betas))
    qcfg = getattr(cfg, "quantizer", None)
    lq = LoopQuantizer(qcfg, x0, info).to(dev) if qcfg is not None and qcfg.enabled else None
    qopt = lq.optimizer() if lq is not None else None
    use_amp = ctx.amp and dev.type == "cuda"
    t0 = time.perf_counter()
    it = -1
    try:
        for it in tqdm(range(cfg.iterations), desc=desc, disable=not ctx.progress, leave=False):
            for pg in opt.param_groups:  # cosine over the whole budget, even if we stop early
                pg["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * it / cfg.iterations))
            k = it % len(teachers)
            teacher, matcher = teachers[k], matchers[k]
            source = mean + std * z
            if lq is not None:
                source = lq(lq.space.from_data(source))
            view, boxes = policy.view(source, it, g)
            if ctx.channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
            matcher.start(y)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = teacher(view).float()
            ce = F.cross_entropy(logits, y, reduction="none")
            bn = matcher.loss()
            loss = ce.mean() + cfg.r_bn * bn
            opt.zero_grad(set_to_none=True)
            if qopt is not None:
                qopt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if qopt is not None:
                qopt.step()
            with torch.no_grad():
                torch.clamp(z, lo, hi, out=z)
            ctx.counter.forward += len(z)
            ctx.counter.backward += len(z)
            if cfg.log_every and (it % cfg.log_every == 0 or it == cfg.iterations - 1):
                ctx.runlog.write(desc, it=it, ce=float(ce.detach().mean()), bn=float(bn.detach()), lr=opt.param_groups[0]["lr"],
                                 **policy.log_fields())
            if policy.observe(it, boxes.detach().cpu(), ce.detach().cpu()):
                break
    finally:
        for m in matchers:
            m.remove()
    secs = time.perf_counter() - t0
    done = it + 1
    stats = {"iterations_run": done, "iterations_saved": cfg.iterations - done, "seconds": secs, **policy.stats()}
    ctx.runlog.write(f"{desc}_done", **stats)
    x = (mean + std * z.detach()).clamp(0.0, 1.0)  # clamp again: float rounding at the range ends
    if lq is not None:  # the stored set is Q(latent): codes + state, decoding to exactly x
        latent = lq.space.from_data(mean + std * z.detach())
        with torch.no_grad():
            x = lq(latent)
        stats["_encoded"] = lq.encoded(latent)  # UnitResult picks it up
    return x.float().contiguous().cpu(), stats


def unit_shape(num_classes: int, batch_size: int, ipc: int) -> tuple[int, int]:
    """(classes per unit, slots per unit) for a batch of about ``batch_size`` images."""
    classes = max(1, min(num_classes, batch_size))
    slots = max(1, min(ipc, batch_size // classes))
    return classes, slots
