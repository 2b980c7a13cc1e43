"""KRR-ST (Lee et al., ICLR 2024, "Self-Supervised Dataset Distillation for Transfer Learning").

Learn m synthetic images X_s and target representations Y_s (initialised from m random real images
and a frozen self-supervised teacher's features of them) so that kernel ridge regression on a
network's features of X_s predicts the teacher's features g(X_t) of real images. Each outer step
takes one network from a pool of L (each trained on (X_s, Y_s) for a random number of steps, then
one full-batch step per use, re-initialised after Z steps), embeds X_s (with gradient) and a real
batch (without), and minimises MSE(K_ts (K_ss + lam I)^-1 Y_s, g(X_t)) with AdamW, linearly
decayed to 1e-3 of its start. Every image enters every network as pixels and is normalised inside
the model (the reference feeds synthetic images un-normalised and real ones normalised; tinyset
does not).

As the reference (db-Lee/selfsup_dd), by default: the pool network runs in eval mode in the outer
step (real and synthetic batches share its running BatchNorm statistics); each real batch is 1,024
training images, pad-4 cropped and flipped, with the teacher run on that augmented view; the pool
networks train by SGD (lr 0.1, momentum 0.9, weight decay 1e-3) and are replaced after Z steps; no
pixel clamp. Each is an option (``pool_bn``, ``real``/``batch_size``, ``pool_*``, ``lr_end``,
``clamp``); the cached clean-feature real batches (``real="cached"``) are the fast CPU path.

The loop is shared with the boosted form (``ssdd.py``) through ``SupportSet``: anything that yields
the support images and targets of every view from learnable parameters."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import augment as A
from ..data.base import Dataset
from ..errors import TinysetError
from ..models import get_model
from ..models.encoder import _head_owner
from ..data.views import rotate
from ..utils.runlog import JsonlLog
from ..utils.seeding import derive_seed
from .base import Method, register_method
from .krr import krr_predict

log = logging.getLogger(__name__)


class SupportSet(nn.Module):
    """Learnable synthetic pairs. ``views`` are the quarter turns every image is used under."""

    views: tuple[int, ...] = (0,)

    def support(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """(images [R*m, C, H, W] view-major, targets [R*m, d])"""
        raise NotImplementedError

    def clamp_(self) -> None:
        pass

    def param_groups(self, cfg) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError


class PixelSupport(SupportSet):
    """KRR-ST's parameterisation: raw pixels and raw targets. With ``clamp`` the pixels are clamped
    to [0, 1] in place after every outer step (so what is stored is what was optimised)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, clamp: bool = False):
        super().__init__()
        self.images = nn.Parameter(images.clone())
        self.targets = nn.Parameter(targets.clone())
        self.clamp = bool(clamp)

    def support(self):
        return self.images, self.targets

    @torch.no_grad()
    def clamp_(self):
        if self.clamp:
            self.images.clamp_(0, 1)

    def param_groups(self, cfg):
        return [{"params": [self.images], "lr": cfg.image_lr}, {"params": [self.targets], "lr": cfg.target_lr}]


class PoolNet(nn.Module):
    """A tinyset model split at its last linear layer: ``features(x)`` and ``head``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        owner, name = _head_owner(model)
        self.head = getattr(owner, name)
        setattr(owner, name, nn.Identity())
        self.body = model

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


BN_MODES = ("eval", "train")
REAL_MODES = ("live", "cached")


@dataclass
class KRRSTConfig:
    m: int = 100  # synthetic images (overridden by ``budget``)
    budget: float | None = None  # storage in "images' worth" of floats (N * C*H*W); sets m
    steps: int = 1000  # outer steps (reference: 160,000; CPU scale)
    batch_size: int = 1024  # real images per outer step (reference 1,024)
    image_lr: float = 1e-4  # AdamW (reference: 1e-3 for CIFAR-100, 1e-5 for the 64-224 px sets)
    target_lr: float = 1e-4  # AdamW lr of the targets
    lr_end: float = 1e-3  # the outer lr decays linearly to lr_end x its start (reference LinearLR end_factor 1e-3; 0 = to zero)
    weight_decay: float = 0.0
    reg: float = 1e-6  # lam = reg * tr(K_ss)
    clamp: bool = False  # clamp pixels to [0, 1] inside the loop (reference: never); stored = decoded = optimised either way
    model: str = "convnet:depth=3,width=64"  # pool networks (their features feed the kernel)
    pool_size: int = 10  # L (reference)
    pool_reinit: int = 1000  # Z: a pool network is replaced after Z inner steps (reference)
    pool_lr: float = 0.1  # one full-batch SGD step of MSE(model(X_s), Y_s) per use (reference 0.1)
    pool_momentum: float = 0.9
    pool_weight_decay: float = 1e-3  # reference
    # BatchNorm of the pool network in the outer step: "eval" (reference) uses its running statistics
    # for the real and the synthetic batch alike; "train" normalises each batch by its own statistics
    # (tinyset before issue 23) and leaves the running buffers as they were
    pool_bn: str = "eval"  # eval (reference: running BN statistics in the outer step) | train (each batch by itself)
    # real batches: "live" (reference) draws batch_size training images, pad-crops (real_pad) and
    # flips them and runs the teacher on that augmented view every step; "cached" uses the teacher's
    # features of the clean images, computed once (much faster on a CPU, no augmentation: not the reference)
    real: str = "live"  # live (reference: teacher on the pad-crop + flip view each step) | cached (clean features, fast)
    real_pad: int = 4  # pad-and-crop of the live real batch (0 = none)
    real_flip: bool = True  # random horizontal flip of the live real batch
    # sets with quarter-turn views (ssdd): True (the boosted paper) turns each real image by one of the
    # views, drawn per image, with the teacher's features of the turned image as its target; False
    # keeps real images upright (only the synthetic support carries the views)
    real_views: bool = True  # views sets: real images turned too (one view per image, the paper) | upright only
    ssl: str = "barlow_twins"  # the teacher's objective (``tinyset teacher --ssl``)


def check_config(cfg: KRRSTConfig) -> None:
    if cfg.pool_bn not in BN_MODES:
        raise TinysetError(f"method_args.pool_bn must be one of {', '.join(BN_MODES)}, got {cfg.pool_bn!r}")
    if cfg.real not in REAL_MODES:
        raise TinysetError(f"method_args.real must be one of {', '.join(REAL_MODES)}, got {cfg.real!r}")
    if not 0 <= cfg.lr_end <= 1:
        raise TinysetError(f"method_args.lr_end is a fraction of the starting lr in [0, 1], got {cfg.lr_end}")
    if cfg.batch_size < 1:
        raise TinysetError(f"method_args.batch_size must be positive, got {cfg.batch_size}")


class ModelPool:
    """L networks at different training stages, each trained on the current synthetic pairs.

    Schedule (the reference's): network i starts with a random number of steps in [1, Z) on the
    initial pairs; each use trains it one more full-batch step; the use after its Z-th step replaces
    it by a fresh network (not trained in that call), which the next outer step then sees at step 0.
    The reference never resets its step counter after a replacement, so from then on that slot is
    replaced at every use (always a fresh network); tinyset keeps the paper's intent and starts the
    counter again, so every slot cycles through 0..Z steps."""

    def __init__(self, cfg: KRRSTConfig, ds: Dataset, dim: int, device, g: torch.Generator):
        self.cfg, self.device, self.g = cfg, device, g
        self.info = dataclasses.replace(ds.info, num_classes=dim, class_names=tuple(str(i) for i in range(dim)))
        self.nets, self.opts, self.ages = [], [], []
        self.inner_steps = 0
        self.resets = 0

    def _fresh(self):
        torch.manual_seed(int(torch.randint(1 << 62, (1,), generator=self.g)))
        net = PoolNet(get_model(self.cfg.model, self.info)).to(self.device)
        opt = torch.optim.SGD(net.parameters(), lr=self.cfg.pool_lr, momentum=self.cfg.pool_momentum,
                              weight_decay=self.cfg.pool_weight_decay)
        return net, opt

    def init(self, support: SupportSet) -> None:
        for _ in range(self.cfg.pool_size):
            net, opt = self._fresh()
            age = int(torch.randint(1, max(self.cfg.pool_reinit, 2), (1,), generator=self.g))  # reference: [1, Z)
            self.nets.append(net)
            self.opts.append(opt)
            self.ages.append(0)
            for _ in range(age):
                self.step(len(self.nets) - 1, support)

    def step(self, i: int, support: SupportSet) -> None:
        if self.ages[i] >= self.cfg.pool_reinit:
            self.nets[i], self.opts[i] = self._fresh()
            self.ages[i] = 0
            self.resets += 1
            return
        x, y = support.support()
        net, opt = self.nets[i], self.opts[i]
        net.train()
        loss = (net(x.detach()) - y.detach()).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.ages[i] += 1
        self.inner_steps += 1
        if not all(torch.isfinite(p).all() for p in net.parameters()):  # diverged: start this one again
            log.warning("pool network %d diverged; re-initialised (lower method_args.pool_lr)", i)
            self.nets[i], self.opts[i] = self._fresh()
            self.ages[i] = 0


@torch.no_grad()
def features_of(encoder: nn.Module, x: torch.Tensor, views: tuple[int, ...], device, batch: int = 500) -> torch.Tensor:
    """[len(views), n, d]: a frozen encoder's features of images ``x`` under each quarter turn."""
    encoder.eval()
    return torch.stack([torch.cat([encoder(rotate(c, k).to(device)).float().cpu() for c in x.split(batch)])
                        for k in views])


class RealBatches:
    """The real side of an outer step: ``draw()`` -> (images [B, C, H, W] on ``device``, the
    teacher's targets [B, d]). ``views``: the quarter turns real images may be shown under (one per
    image, drawn uniformly). Live: random training images, pad-crop + flip, the teacher run on the
    augmented (and turned) view. Cached: ``feats`` [R, N, d], the teacher's features of every clean
    training image under each view, computed once (no crop or flip)."""

    def __init__(self, ds: Dataset, cfg: KRRSTConfig, views: tuple[int, ...], g: torch.Generator, device,
                 encoder: nn.Module | None = None, feats: torch.Tensor | None = None):
        self.ds, self.cfg, self.views, self.g, self.device = ds, cfg, tuple(views), g, device
        self.encoder, self.feats = encoder, feats
        if cfg.real == "live" and encoder is None:
            raise TinysetError("live real batches need the teacher's encoder")
        if cfg.real == "cached":
            if feats is None or feats.shape[0] != len(self.views):
                got = None if feats is None else feats.shape[0]
                raise TinysetError(f"teacher features cover {got} views, the real batches use {len(self.views)}")
            if cfg.real_pad or cfg.real_flip:
                log.info("real batches: cached clean features (no pad-crop/flip; method_args.real=live is the reference)")

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, bs, g = len(self.ds.train), self.cfg.batch_size, self.g
        idx = torch.randint(n, (bs,), generator=g)
        v = torch.randint(len(self.views), (bs,), generator=g)  # one view per real image
        x, _ = self.ds.train.get_batch(idx)
        if self.cfg.real == "cached":
            xt = torch.cat([rotate(x[v == j], k) for j, k in enumerate(self.views)]).to(self.device)
            yt = torch.cat([self.feats[j, idx[v == j]] for j in range(len(self.views))]).to(self.device)
            return xt, yt
        if self.cfg.real_pad > 0:
            x = A.random_shift_flip(x, self.cfg.real_pad, generator=g, flip=self.cfg.real_flip)
        elif self.cfg.real_flip:
            x = A.random_flip(x, generator=g)
        xt = torch.cat([rotate(x[v == j], k) for j, k in enumerate(self.views)]).to(self.device)
        self.encoder.eval()
        with torch.no_grad():
            yt = self.encoder(xt).float()
        return xt, yt


def make_real(ds: Dataset, cfg: KRRSTConfig, views: tuple[int, ...], teacher, device, g: torch.Generator) -> RealBatches:
    """Real batches for a set whose support uses ``views`` (``real_views`` decides whether real images
    are turned too). ``teacher``: an ``SSLTeacher``."""
    real_views = tuple(views) if cfg.real_views else (0,)
    if cfg.real == "cached":
        from ..teachers.ssl import teacher_features

        feats = teacher_features(teacher, ds.train, f"{ds.info.name}-train", real_views, device)
        return RealBatches(ds, cfg, real_views, g, device, feats=feats)
    return RealBatches(ds, cfg, real_views, g, device, encoder=teacher.encoder)


def outer_loss(net: PoolNet, support: SupportSet, xt: torch.Tensor, yt: torch.Tensor,
               cfg: KRRSTConfig) -> tuple[torch.Tensor, int]:
    """(MSE(K_ts (K_ss + lam I)^-1 Y_s, Y_t), feature size p) through one pool network. ``pool_bn`` "eval" runs it in
    eval mode (running BatchNorm statistics for both batches, the buffers untouched, the reference);
    "train" normalises each batch by its own statistics (running buffers restored afterwards, so the
    outer step never moves them)."""
    xs, ys = support.support()
    saved = None
    if cfg.pool_bn == "eval":
        net.eval()
    else:
        net.train()
        saved = {k: b.clone() for k, b in net.named_buffers()}
    with torch.no_grad():
        ht = net.features(xt)
    hs = net.features(xs)
    if saved is not None:
        with torch.no_grad():
            for k, b in net.named_buffers():
                b.copy_(saved[k])
    return (krr_predict(ht, hs, ys, cfg.reg) - yt).pow(2).mean(), hs.shape[1]


def lr_factor(step: int, steps: int, end: float = 1e-3) -> float:
    """The outer lr's multiplier: linear from 1 at step 0 to ``end`` at ``steps`` (reference: torch's
    LinearLR with end_factor 1e-3)."""
    return 1.0 - (1.0 - float(end)) * min(step, steps) / max(steps, 1)


def check_rank(p: int, support: int, desc: str) -> bool:
    """K_ss = H_s H_s^T (features + a bias column) has rank at most p + 1: with more support pairs
    than that, KRR cannot interpolate them and collapses towards ridge regression."""
    if p + 1 < support:
        log.warning("%s: the pool networks' %d features (+1 bias) are fewer than the %d support pairs (views x images): "
                    "K_ss is rank-deficient; widen method_args.model or store fewer pairs", desc, p, support)
        return False
    return True


def run_krr_st(support: SupportSet, ds: Dataset, real: RealBatches, cfg: KRRSTConfig, device, g: torch.Generator,
               runlog: JsonlLog | None = None, progress: bool = True, desc: str = "krr_st") -> dict:
    """The outer loop. ``real`` hands out each step's real batch with its teacher targets. Returns
    stats (seconds, losses, the first and last loss, the kernel's rank check)."""
    check_config(cfg)
    runlog = runlog or JsonlLog(None)
    support.to(device)
    stats = {"steps": cfg.steps, "losses": []}
    if cfg.steps <= 0:
        return stats
    opt = torch.optim.AdamW(support.param_groups(cfg), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.lr_end))
    dim = support.support()[1].shape[-1]
    pool = ModelPool(cfg, ds, dim, device, g)
    t0 = time.perf_counter()
    pool.init(support)
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        i = int(torch.randint(len(pool.nets), (1,), generator=g))
        net = pool.nets[i]
        xt, yt = real.draw()
        for p in net.parameters():
            p.requires_grad_(False)
        loss, p_dim = outer_loss(net, support, xt, yt, cfg)
        if step == 0:
            n_support = support.support()[0].shape[0]
            stats.update(feature_dim=p_dim, support_size=n_support, full_rank=check_rank(p_dim, n_support, desc))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in net.parameters():
            p.requires_grad_(True)
        opt.step()
        sched.step()
        support.clamp_()
        pool.step(i, support)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise TinysetError(f"{desc}: loss became {lv} at step {step}; lower method_args.image_lr/target_lr")
        stats["losses"].append(lv)
        if step % 10 == 0 or step == cfg.steps - 1:
            runlog.write(desc, step=step, loss=lv)
            bar.set_postfix(loss=f"{lv:.4f}")
    stats.update(seconds=time.perf_counter() - t0, pool_inner_steps=pool.inner_steps, pool_resets=pool.resets,
                 first_loss=stats["losses"][0], last_loss=stats["losses"][-1],
                 final_lr=[grp["lr"] for grp in opt.param_groups])
    stats["losses"] = stats["losses"][:: max(1, cfg.steps // 100)]
    return stats


def choose_real(ds: Dataset, m: int, g: torch.Generator) -> torch.Tensor:
    """m distinct random training indices (labels are never read)."""
    if m > len(ds.train):
        raise TinysetError(f"asked for {m} synthetic images but {ds.info.name} has only {len(ds.train)} training images")
    return torch.randperm(len(ds.train), generator=g)[:m]


class SelfSupervisedMethod(Method):
    """A method that distils the whole unlabelled set at once against a self-supervised teacher and
    returns stored tensors (and optionally a decoder) instead of labelled images per unit. The
    pipeline hands it to ``tinyset.jobs.distill_ssl.distill_ssl``."""

    self_supervised = True
    classes_per_unit = None

    def run_unit(self, unit, g):
        raise TinysetError(f"method {self.name} distils the whole unlabelled set at once against a self-supervised "
                           "teacher; run it with `tinyset distill` (jobs.distill.distill), not per unit")

    def distill_set(self, teacher, g: torch.Generator) -> dict:  # pragma: no cover - abstract
        """-> {"tensors": {...}, "decoder": {"name", "config"} | None, "stats": {...}}"""
        raise NotImplementedError


def krr_st_size(budget_floats: float, shape: tuple[int, ...], dim: int) -> int:
    """Images (with their d targets each) that fit in ``budget_floats`` floats."""
    per = int(torch.tensor(shape).prod()) + dim
    m = int((budget_floats + 1e-6) // per)  # budgets given as m * per / (C*H*W) images' worth land exactly
    if m < 1:
        raise TinysetError(f"a budget of {budget_floats:.0f} floats holds no image with its {dim}-d target ({per} floats)")
    return m


def budget_floats(cfg, shape: tuple[int, ...]) -> float | None:
    return None if cfg.budget is None else float(cfg.budget) * int(torch.tensor(shape).prod())


@register_method("krr_st", "KRR-ST: images + self-supervised target representations by kernel ridge regression (no labels)")
class KRRST(SelfSupervisedMethod):
    Config = KRRSTConfig

    def distill_set(self, teacher, g):
        ds, dev = self.ctx.dataset, self.ctx.device
        cfg = self.steps_cfg()
        check_config(cfg)
        budget = budget_floats(cfg, ds.info.shape)
        m = krr_st_size(budget, ds.info.shape, teacher.dim) if budget is not None else cfg.m
        idx = choose_real(ds, m, g)
        x, _ = ds.train.get_batch(idx)
        support = PixelSupport(x, features_of(teacher.encoder, x, (0,), dev)[0], clamp=cfg.clamp)
        stats = {"steps": 0}
        if cfg.steps > 0:
            real = make_real(ds, cfg, (0,), teacher, dev, g)
            stats = run_krr_st(support, ds, real, cfg, dev, g, self.ctx.runlog, self.ctx.progress, self.name)
        stats.update(m=m, source_indices=idx.tolist())
        # stored exactly as optimised (with ``clamp`` the loop already kept the pixels in [0, 1])
        return {"tensors": {"images": support.images.detach().cpu().clone(), "targets": support.targets.detach().cpu().clone()},
                "decoder": None, "stats": stats}

    def steps_cfg(self) -> KRRSTConfig:
        return self.cfg


@register_method("ssl_random", "random real subset with the self-supervised teacher's features as targets (KRR-ST's floor)")
class SSLRandom(KRRST):
    def steps_cfg(self):
        return dataclasses.replace(self.cfg, steps=0)


def seed_for(seed: int, name: str) -> int:
    return derive_seed(seed, name, "whole-set")
