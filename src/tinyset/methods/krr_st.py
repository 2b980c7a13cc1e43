"""KRR-ST (Lee et al., ICLR 2024, "Self-Supervised Dataset Distillation for Transfer Learning").

Learn m synthetic images X_s and target representations Y_s (initialised from m random real images
and a frozen self-supervised teacher's features of them) so that kernel ridge regression on a
network's features of X_s predicts the teacher's features g(X_t) of real images. Each outer step
takes one network from a pool of L (each trained on (X_s, Y_s) for a random number of steps, then
one full-batch step per use, re-initialised after Z steps), embeds X_s (with gradient) and a real
batch (without), and minimises MSE(K_ts (K_ss + lam I)^-1 Y_s, g(X_t)) with AdamW, linearly
decayed. Every image enters every network in [0, 1] and is normalised inside the model (the
reference feeds synthetic images un-normalised and real ones normalised; tinyset does not).

The loop is shared with the boosted form (``ssdd.py``) through ``SupportSet``: anything that yields
the support images and targets of every view from learnable parameters."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.base import Dataset
from ..errors import TinysetError
from ..models import get_model
from ..models.encoder import _head_owner
from ..data.views import all_views
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
    """KRR-ST's parameterisation: raw pixels and raw targets."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        self.images = nn.Parameter(images.clone())
        self.targets = nn.Parameter(targets.clone())

    def support(self):
        return self.images, self.targets

    @torch.no_grad()
    def clamp_(self):
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


@dataclass
class KRRSTConfig:
    m: int = 100  # synthetic images (overridden by ``budget``)
    budget: float | None = None  # storage in "images' worth" of floats (N * C*H*W); sets m
    steps: int = 1000  # outer steps (reference: far more; CPU scale)
    batch_size: int = 256  # real images per outer step
    image_lr: float = 1e-4  # AdamW, linear decay (reference)
    target_lr: float = 1e-4
    weight_decay: float = 0.0
    reg: float = 1e-6  # lam = reg * tr(K_ss)
    model: str = "convnet:depth=3,width=64"  # pool networks (their features feed the kernel)
    pool_size: int = 10  # L (reference)
    pool_reinit: int = 1000  # Z: a pool network is re-initialised after this many steps (reference)
    pool_lr: float = 0.01  # one full-batch SGD step of MSE(model(X_s), Y_s) per use
    pool_momentum: float = 0.9
    pool_weight_decay: float = 5e-4
    ssl: str = "barlow_twins"  # the teacher's objective (``tinyset teacher --ssl``)


class ModelPool:
    """L networks at different training stages, each trained on the current synthetic pairs."""

    def __init__(self, cfg: KRRSTConfig, ds: Dataset, dim: int, device, g: torch.Generator):
        self.cfg, self.device, self.g = cfg, device, g
        self.info = dataclasses.replace(ds.info, num_classes=dim, class_names=tuple(str(i) for i in range(dim)))
        self.nets, self.opts, self.ages = [], [], []
        self.inner_steps = 0

    def _fresh(self):
        torch.manual_seed(int(torch.randint(1 << 62, (1,), generator=self.g)))
        net = PoolNet(get_model(self.cfg.model, self.info)).to(self.device)
        opt = torch.optim.SGD(net.parameters(), lr=self.cfg.pool_lr, momentum=self.cfg.pool_momentum,
                              weight_decay=self.cfg.pool_weight_decay)
        return net, opt

    def init(self, support: SupportSet) -> None:
        for _ in range(self.cfg.pool_size):
            net, opt = self._fresh()
            age = int(torch.randint(0, max(self.cfg.pool_reinit, 1), (1,), generator=self.g))
            self.nets.append(net)
            self.opts.append(opt)
            self.ages.append(0)
            for _ in range(age):
                self.step(len(self.nets) - 1, support)

    def step(self, i: int, support: SupportSet) -> None:
        if self.ages[i] >= self.cfg.pool_reinit:
            self.nets[i], self.opts[i] = self._fresh()
            self.ages[i] = 0
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
            log.warning("pool network %d diverged; re-initialised", i)
            self.nets[i], self.opts[i] = self._fresh()
            self.ages[i] = 0


def run_krr_st(support: SupportSet, ds: Dataset, feats: torch.Tensor, cfg: KRRSTConfig, device,
               g: torch.Generator, runlog: JsonlLog | None = None, progress: bool = True, desc: str = "krr_st") -> dict:
    """The outer loop. ``feats`` [R, N, d]: the teacher's cached features of every real training image
    under each of ``support.views``. Returns stats (seconds, losses)."""
    runlog = runlog or JsonlLog(None)
    views = support.views
    if feats.shape[0] != len(views):
        raise TinysetError(f"teacher features cover {feats.shape[0]} views, the support set uses {len(views)}")
    support.to(device)
    stats = {"steps": cfg.steps, "losses": []}
    if cfg.steps <= 0:
        return stats
    opt = torch.optim.AdamW(support.param_groups(cfg), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / cfg.steps)
    pool = ModelPool(cfg, ds, feats.shape[-1], device, g)
    t0 = time.perf_counter()
    pool.init(support)
    n = len(ds.train)
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        i = int(torch.randint(len(pool.nets), (1,), generator=g))
        net = pool.nets[i]
        idx = torch.randint(n, (cfg.batch_size,), generator=g)
        v = torch.randint(len(views), (cfg.batch_size,), generator=g)  # one predefined view per real image
        xr, _ = ds.train.get_batch(idx)
        xt = torch.cat([all_views(xr[v == j], (k,)) for j, k in enumerate(views)]).to(device)
        yt = torch.cat([feats[j, idx[v == j]] for j in range(len(views))]).to(device)
        xs, ys = support.support()
        net.train()
        with torch.no_grad():
            ht = net.features(xt)
        hs = net.features(xs)
        loss = (krr_predict(ht, hs, ys, cfg.reg) - yt).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        for p in net.parameters():
            p.requires_grad_(False)
        loss.backward()
        for p in net.parameters():
            p.requires_grad_(True)
        opt.step()
        sched.step()
        support.clamp_()
        pool.step(i, support)
        lv = float(loss.detach())
        if not torch.isfinite(torch.tensor(lv)):
            raise TinysetError(f"{desc}: loss became {lv} at step {step}; lower method_args.image_lr/target_lr")
        stats["losses"].append(lv)
        if step % 10 == 0 or step == cfg.steps - 1:
            runlog.write(desc, step=step, loss=lv)
            bar.set_postfix(loss=f"{lv:.4f}")
    stats.update(seconds=time.perf_counter() - t0, pool_inner_steps=pool.inner_steps,
                 first_loss=stats["losses"][0], last_loss=stats["losses"][-1])
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
        ds, cfg, dev = self.ctx.dataset, self.cfg, self.ctx.device
        from ..teachers.ssl import teacher_features

        feats = teacher_features(teacher, ds.train, f"{ds.info.name}-train", (0,), dev)
        budget = budget_floats(cfg, ds.info.shape)
        m = krr_st_size(budget, ds.info.shape, teacher.dim) if budget is not None else cfg.m
        idx = choose_real(ds, m, g)
        x, _ = ds.train.get_batch(idx)
        support = PixelSupport(x, feats[0, idx])
        stats = run_krr_st(support, ds, feats, self.steps_cfg(), dev, g, self.ctx.runlog, self.ctx.progress, self.name)
        stats.update(m=m, source_indices=idx.tolist())
        return {"tensors": {"images": support.images.detach().cpu().clamp(0, 1), "targets": support.targets.detach().cpu()},
                "decoder": None, "stats": stats}

    def steps_cfg(self) -> KRRSTConfig:
        return self.cfg


@register_method("ssl_random", "random real subset with the self-supervised teacher's features as targets (KRR-ST's floor)")
class SSLRandom(KRRST):
    def steps_cfg(self):
        return dataclasses.replace(self.cfg, steps=0)


def seed_for(seed: int, name: str) -> int:
    return derive_seed(seed, name, "whole-set")
