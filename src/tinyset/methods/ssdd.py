"""Boosted self-supervised dataset distillation (Yu, Yao, Chiu, ICLR 2025): KRR-ST's loop on a
compact parameterisation.

1. Parameterisation: images = upsample(coeff @ image_bases) at low resolution, representations =
   coeff @ repr_bases; bases from PCA of real images / teacher features (or random, the ablation),
   coefficients from projecting m chosen real images; everything is learned.
2. Predefined augmentation: exact quarter-turn views, each with its own representation
   coefficients (initialised from the teacher's features of the rotated real images); every view of
   every image is in the pool networks' regression and in the KRR support set.
3. Approximation: afterwards one tiny residual network per non-identity view predicts that view's
   coefficients from the unrotated ones, so only the networks are stored (``approx=False`` stores
   every view's coefficients instead, the ablation).

The stored components and the ``bases`` decoder that rebuilds images and targets are counted
float by float against the budget (``budget`` in images' worth of floats)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..errors import TinysetError
from ..data.views import QUARTER_TURNS, all_views
from ..param.view_nets import fit_view_net, n_params, view_net_state
from ..param.bases import BasesParam, downsample, pca_bases, project, random_bases
from .base import register_method
from .krr_st import KRRSTConfig, SelfSupervisedMethod, SupportSet, budget_floats, choose_real, run_krr_st


@dataclass
class SSDDConfig(KRRSTConfig):
    image_bases: int = 200  # U
    repr_bases: int = 200  # V
    low_res: int | None = None  # bases' resolution (default half the image size)
    views: tuple[int, ...] = QUARTER_TURNS  # quarter turns; (0,) = no predefined augmentation
    init_bases: str = "pca"  # pca | random
    approx: bool = True  # store tiny view networks instead of every view's coefficients
    approx_hidden: int = 4
    approx_steps: int = 2000
    approx_lr: float = 1e-2
    pca_samples: int = 5000  # real images the PCA bases are computed from
    image_lr: float = 1e-3  # coefficients and bases move more per unit of lr than pixels
    target_lr: float = 1e-3


class BasesSupport(SupportSet):
    def __init__(self, param: BasesParam, views: tuple[int, ...]):
        super().__init__()
        self.param = param
        self.views = tuple(views)

    def support(self):
        x = all_views(self.param.images(), self.views)
        y = self.param.targets().flatten(0, 1)  # [R*m, d], view-major like the images
        return x, y

    @torch.no_grad()
    def clamp_(self):
        pass  # pixels are clamped when decoded for storage and use, not in coefficient space

    def param_groups(self, cfg):
        p = self.param
        return [{"params": [p.image_coeff, p.image_bases], "lr": cfg.image_lr},
                {"params": [p.repr_coeff, p.repr_bases], "lr": cfg.target_lr}]


def ssdd_floats(m: int, cfg: SSDDConfig, low_shape, dim: int) -> int:
    """Floats stored for m images: bases, image coefficients, representation coefficients of the
    identity view (every view without ``approx``) and the view networks."""
    r = len(cfg.views)
    low = math.prod(low_shape)
    fixed = cfg.image_bases * low + cfg.repr_bases * dim
    if cfg.approx:
        fixed += (r - 1) * n_params(cfg.repr_bases, cfg.approx_hidden)
    per = cfg.image_bases + cfg.repr_bases * (1 if cfg.approx else r)
    return fixed + m * per


def ssdd_size(budget: float, cfg: SSDDConfig, low_shape, dim: int) -> int:
    fixed = ssdd_floats(0, cfg, low_shape, dim)
    per = ssdd_floats(1, cfg, low_shape, dim) - fixed
    m = int((budget - fixed + 1e-6) // per)
    if m < 1:
        raise TinysetError(f"a budget of {budget:.0f} floats does not cover the bases and networks ({fixed} floats) plus one "
                           f"image; lower method_args.image_bases/repr_bases or raise the budget")
    return m


@register_method("ssdd", "boosted self-supervised distillation: PCA bases, rotation views, tiny view networks (no labels)")
class SSDD(SelfSupervisedMethod):
    Config = SSDDConfig

    def distill_set(self, teacher, g):
        from ..teachers.ssl import teacher_features

        ds, cfg, dev = self.ctx.dataset, self.cfg, self.ctx.device
        views = tuple(int(v) % 4 for v in cfg.views)
        if views[0] != 0 or len(set(views)) != len(views):
            raise TinysetError(f"method_args.views must start with 0 and not repeat, got {list(cfg.views)}")
        c, size = ds.info.channels, ds.info.image_size
        low = int(cfg.low_res or max(1, size // 2))
        low_shape = (c, low, low)
        approx = bool(cfg.approx and len(views) > 1)
        eff = dataclasses.replace(cfg, views=views, approx=approx)
        feats = teacher_features(teacher, ds.train, f"{ds.info.name}-train", views, dev)
        budget = budget_floats(cfg, ds.info.shape)
        m = ssdd_size(budget, eff, low_shape, teacher.dim) if budget is not None else cfg.m
        idx = choose_real(ds, m, g)
        x0, _ = ds.train.get_batch(idx)
        # bases: PCA of a fixed random sample of real images (low resolution) and of their features
        pidx = torch.randperm(len(ds.train), generator=g)[: cfg.pca_samples]
        if cfg.init_bases == "pca":
            xp, _ = ds.train.get_batch(pidx)
            ib = pca_bases(downsample(xp, low), cfg.image_bases)
            rb = pca_bases(feats[:, pidx].flatten(0, 1), cfg.repr_bases)
        elif cfg.init_bases == "random":
            ib = random_bases(cfg.image_bases, math.prod(low_shape), g)
            rb = random_bases(cfg.repr_bases, teacher.dim, g)
        else:
            raise TinysetError(f"method_args.init_bases must be pca or random, got {cfg.init_bases!r}")
        icoef = project(downsample(x0, low), ib)
        rcoef = torch.stack([project(feats[j, idx], rb) for j in range(len(views))])
        param = BasesParam(icoef, ib, rcoef, rb, low_shape, size)
        support = BasesSupport(param, views)
        stats = run_krr_st(support, ds, feats, cfg, dev, g, self.ctx.runlog, self.ctx.progress, self.name)
        param = param.cpu()
        tensors = {k: getattr(param, k).detach().clone() for k in ("image_coeff", "image_bases", "repr_bases")}
        rc = param.repr_coeff.detach()
        approx_err = {}
        if approx:
            tensors["repr_coeff"] = rc[:1].clone()
            for j in range(1, len(views)):
                net, rel = fit_view_net(rc[0], rc[j], cfg.approx_hidden, cfg.approx_steps, cfg.approx_lr,
                                        seed=int(torch.randint(1 << 62, (1,), generator=g)))
                tensors.update(view_net_state(net, f"view{j}"))
                approx_err[str(views[j])] = rel
        else:
            tensors["repr_coeff"] = rc.clone()
        floats = sum(t.numel() for t in tensors.values())
        expected = ssdd_floats(m, eff, low_shape, teacher.dim)
        if floats != expected:
            raise TinysetError(f"internal: stored {floats} floats, the budget arithmetic says {expected}")
        stats.update(m=m, stored_floats=floats, approx_relative_error=approx_err, source_indices=idx.tolist())
        decoder = {"name": "bases", "config": {"low_shape": list(low_shape), "size": size, "views": list(views),
                                               "approx": approx}}
        return {"tensors": tensors, "decoder": decoder, "stats": stats}
