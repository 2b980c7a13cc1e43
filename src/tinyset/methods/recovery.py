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
from ..utils.progress import progress_bar as tqdm  # tqdm on a terminal, log lines otherwise

from ..data import augment as A
from ..quant.inloop import LoopQuantizer, QuantizerConfig
from ..utils.hardware import warn_slow_cpu_bf16
from .base import MethodContext
from .bn_matching import BNMatcher, BNTargets
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
    # view: targets measured under the loop's own view | teacher: running stats (+ un-augmented class stats)
    # | crop: running stats + class (and conv) stats under a crop of stats_crop_scale + flip (E2D's reference)
    bn_targets: str = "view"
    stats_ema: float | None = None  # EMA momentum of batch statistics across steps (0.8 in EDC/E2D), straight-through
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    batch_size: int = 100  # images optimised together (classes x slots)
    # E2D's reference structure (issue 24), each its own switch; bn_matching.py says what each matches
    match_conv: bool = False  # also match every Conv2d input (channel + patch mean/var); x10 moves to the first conv
    patch_size: int = 16  # side of the patch cells of the Conv2d-input statistics (0 = channel statistics only)
    class_target: str = "per_image"  # per_image: per class, mean of per-image stats | pooled: batch vs its labels' mixture
    stats_crop_scale: tuple[float, float] = (0.08, 1.0)  # the statistics pass's crop under bn_targets="crop" (+ flip)
    stats_ema_persist: bool = False  # carry the statistics EMA across units (the reference never resets it)
    classes_per_batch: int | None = None  # classes in one unit (None: as many as batch_size holds, up to all)
    log_every: int = 50
    solved_ce: float | None = None  # stripe remedy: skip the update of an image whose CE on this step's view is below this
    # QuADD: every view is cut from Q(latent); one clip per image so units merge into one set
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(granularity="image"))


class ViewPolicy:
    """Chooses the view of the images that feeds the loss at each step."""

    def view(self, x: torch.Tensor, it: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def spec(self) -> dict:
        """What the view distribution depends on: the key of the cached BN statistics under it."""
        return {"policy": type(self).__name__}

    def sample_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A view of real images drawn like the loop's (for measuring BN targets under it)."""
        return self.view(x, 0, g)[0]

    def observe(self, it: int, boxes: torch.Tensor, ce: torch.Tensor) -> bool:
        """See the per-sample CE of the step; return True to stop early."""
        return False

    def stats(self) -> dict:
        return {}

    def log_fields(self) -> dict:
        """Extra numbers for each logged step of ``log.jsonl`` (the report draws them)."""
        return {}


class ShiftPolicy(ViewPolicy):
    """SRe2L's CIFAR recipe: a circular shift of the whole batch by (0..jitter, 0..jitter) pixels,
    no crop, no flip (the reference's recover_cifar.py)."""

    def __init__(self, jitter: int):
        self.jitter = int(jitter)

    def spec(self):
        return {"policy": "shift", "jitter": self.jitter}

    def view(self, x, it, g):
        n, _, h, w = x.shape
        dy, dx = (int(v) for v in torch.randint(0, self.jitter + 1, (2,), generator=g))
        box = torch.tensor([[0.0, 0.0, float(w), float(h)]]).expand(n, 4)
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3)), box


class SharedCropPolicy(ViewPolicy):
    """SRe2L's ImageNet recipe: one random-resized-crop box for the whole batch after a random shift (jitter)."""

    def __init__(self, scale: tuple[float, float], jitter: int, flip: bool = True):
        self.scale, self.jitter, self.flip = scale, jitter, flip

    def spec(self):
        return {"policy": "shared_crop", "scale": list(self.scale), "jitter": self.jitter, "flip": self.flip}

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

    def spec(self):
        # exploitation revisits explored crops, so both phases share this distribution
        return {"policy": "random_crop", "scale": list(self.scale), "flip": self.flip}

    def sample_view(self, x, g):
        return RandomCropPolicy.view(self, x, 0, g)[0]

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
        self.occupancy: list[int] = []  # crops held after each step (the memory's curve over the run)

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
        self.occupancy.append(len(self.memory))
        if it >= self.explore_steps - 1 and self.memory.all_empty():
            self.stopped_at = it + 1
            return True
        return False

    def stats(self):
        return {"crops_stored": self.memory.stored_total, "crops_left": len(self.memory), "stopped_at": self.stopped_at,
                "memory_occupancy": list(self.occupancy)}

    def log_fields(self):
        return {"crops_in_memory": len(self.memory)}  # the report's crop-memory curve


def recover(
    x0: torch.Tensor,
    labels: torch.Tensor,
    cfg: RecoveryConfig,
    policy: ViewPolicy,
    ctx: MethodContext,
    g: torch.Generator,
    targets: list[BNTargets] | None = None,
    desc: str = "recover",
    ema_states: list[dict] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Run the loop on one unit. ``targets``: the BN targets of each teacher (main first; None =
    running statistics only). ``ema_states``: one dict per teacher holding the statistics EMA, handed
    on from unit to unit to carry it across them (None: it starts afresh). Returns the last iterate
    (on CPU) and bookkeeping."""
    dev = ctx.device
    teachers = [ctx.teacher] + list(ctx.teachers)
    targets = targets or [BNTargets() for _ in teachers]
    if len(targets) != len(teachers):
        raise ValueError(f"{len(targets)} BN targets for {len(teachers)} teachers")
    if getattr(cfg, "match_conv", False) and any(tg.conv_stats is None for tg in targets):
        raise ValueError("match_conv needs every teacher's Conv2d-input statistics (RecoveryMethod.bn_targets)")
    ema_states = ema_states or [None] * len(teachers)
    carried = any(bool(e) for e in ema_states)
    matchers = [BNMatcher(t, cfg.first_bn_multiplier, tg.class_stats, cfg.stats_ema, tg.global_stats,
                          class_moments=tg.class_moments, conv_targets=tg.conv_stats,
                          conv_patch=tg.conv_patch or 0, ema_state=e)
                for t, tg, e in zip(teachers, targets, ema_states)]
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
    use_amp = ctx.amp and dev.type in ("cuda", "cpu")  # bf16 autocast; BN moments and losses in float32
    if use_amp and dev.type == "cpu":
        warn_slow_cpu_bf16()
    t0 = time.perf_counter()
    it = -1
    frozen_steps = 0
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
            solved = None
            if cfg.solved_ce is not None:
                # Adam keeps taking ~lr-sized steps after CE is solved (its normalised step does not
                # shrink with the gradient); those steps paint per-class stripe templates. Restoring
                # the rows of solved images after the step stops them (zeroing the gradient would not:
                # Adam's momentum still moves them).
                solved = (ce.detach() < cfg.solved_ce).view(-1, 1, 1, 1)
                before = z.detach().clone()
            opt.step()
            if qopt is not None:
                qopt.step()
            with torch.no_grad():
                if solved is not None:
                    z.copy_(torch.where(solved, before, z))
                    frozen_steps += int(solved.sum())
                torch.clamp(z, lo, hi, out=z)
            ctx.counter.forward += len(z)
            ctx.counter.backward += len(z)
            if cfg.log_every and (it % cfg.log_every == 0 or it == cfg.iterations - 1):
                ctx.runlog.write("recover_step", unit=desc, it=it, ce=float(ce.detach().mean()), bn=float(bn.detach()),
                                 lr=opt.param_groups[0]["lr"], **policy.log_fields())
            if policy.observe(it, boxes.detach().cpu(), ce.detach().cpu()):
                break
    finally:
        for m in matchers:
            m.remove()
    secs = time.perf_counter() - t0
    done = it + 1
    stats = {"iterations_run": done, "iterations_saved": cfg.iterations - done, "seconds": secs, **policy.stats()}
    if getattr(cfg, "stats_ema_persist", False):
        stats["stats_ema_carried_in"] = carried  # this unit began from the EMA the units before it left
    if cfg.solved_ce is not None:
        stats["frozen_image_steps"] = frozen_steps
    ctx.runlog.write("recover_done", unit=desc, **stats)
    x = (mean + std * z.detach()).clamp(0.0, 1.0)  # clamp again: float rounding at the range ends
    if lq is not None:  # the stored set is Q(latent): codes + state, decoding to exactly x
        latent = lq.space.from_data(mean + std * z.detach())
        with torch.no_grad():
            x = lq(latent)
        stats["_encoded"] = lq.encoded(latent)  # UnitResult picks it up
    return x.float().contiguous().cpu(), stats


def unit_shape(num_classes: int, batch_size: int, ipc: int, classes: int | None = None) -> tuple[int, int]:
    """(classes per unit, slots per unit) for a batch of about ``batch_size`` images: ``classes``
    classes (None: as many as the batch holds, up to all) x as many slots as fit beside them
    (batch 20: 10 classes x 2 slots on a 10-class set; with classes=2, 2 x 10 as E2D's reference)."""
    classes = max(1, min(num_classes, classes if classes else batch_size))
    slots = max(1, min(ipc, batch_size // classes))
    return classes, slots
