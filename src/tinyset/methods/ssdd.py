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
   every view's coefficients instead, the ablation). Their relative error is reported beside the
   "predict zero shift" baseline (c_r ~= c_0), which a useful network must beat.

The outer loop, the pool and the real batches are KRR-ST's (``krr_st.py``), with the same reference
defaults. Nothing is clamped unless ``clamp`` is set, and then the loop and the decoder clamp the same
pixels, so the decoded set is exactly the set that was optimised.

The stored components and the ``bases`` decoder that rebuilds images and targets are counted
float by float against the budget (``budget`` in images' worth of floats)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..errors import TinysetError
from ..data.views import QUARTER_TURNS, all_views
from ..param.view_nets import fit_view_net, n_params, view_net_state, zero_shift_error
from ..param.bases import BasesParam, PixelViewsParam, downsample, pca_bases, project, random_bases
from .base import register_method
from .krr_st import (KRRSTConfig, SelfSupervisedMethod, SupportSet, budget_floats, check_config, choose_real, features_of,
                     make_real, run_krr_st)

BASES = ("pca", "random", "none")


@dataclass
class SSDDConfig(KRRSTConfig):
    image_bases: int = 200  # U
    repr_bases: int = 200  # V
    low_res: int | None = None  # bases' resolution (default half the image size)
    views: tuple[int, ...] = QUARTER_TURNS  # quarter turns; (0,) = no predefined augmentation
    # pca | random (the ablation) | none: no bases at all, full-resolution pixels and raw targets per
    # view (KRR-ST with the views: the pixels_views ablation; the view networks then map raw targets)
    init_bases: str = "pca"  # pca | random (ablation) | none (no bases: pixels + raw targets per view, pixels_views)
    approx: bool = True  # store tiny view networks instead of every view's coefficients
    approx_hidden: int = 4
    approx_steps: int = 2000
    approx_lr: float = 1e-2
    pca_samples: int = 5000  # real images the PCA bases are computed from
    image_lr: float = 1e-3  # coefficients and bases move more per unit of lr than pixels
    target_lr: float = 1e-3


class BasesSupport(SupportSet):
    """Every view of every image in the support: images from ``param.images()`` (clamped there when
    the set is distilled with ``clamp``; the decoder does the same), targets per view."""

    def __init__(self, param: BasesParam | PixelViewsParam, views: tuple[int, ...]):
        super().__init__()
        self.param = param
        self.views = tuple(views)

    def support(self):
        x = all_views(self.param.images(), self.views)
        y = self.param.targets().flatten(0, 1)  # [R*m, d], view-major like the images
        return x, y

    def param_groups(self, cfg):
        return self.param.groups(cfg.image_lr, cfg.target_lr)


def _no_bases(cfg) -> bool:
    return cfg.init_bases == "none"


def ssdd_floats(m: int, cfg: SSDDConfig, low_shape, dim: int) -> int:
    """Floats stored for m images: bases, image coefficients, representation coefficients of the
    identity view (every view without ``approx``) and the view networks. Without bases
    (``init_bases="none"``, ``low_shape`` = the image shape): pixels, raw targets and the networks."""
    r = len(cfg.views)
    low = math.prod(low_shape)
    if _no_bases(cfg):
        fixed = (r - 1) * n_params(dim, cfg.approx_hidden) if cfg.approx else 0
        return fixed + m * (low + dim * (1 if cfg.approx else r))
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


def store_set(param: BasesParam | PixelViewsParam, views: tuple[int, ...], approx: bool, cfg: SSDDConfig,
              g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """The stored components of a distilled set (the view networks fitted here) and, per view, the
    networks' relative error beside the "predict zero shift" baseline (c_r ~= c_0)."""
    tensors = param.stored(approx)
    err, zero = {}, {}
    if approx:
        rc = param.coefficients().detach().cpu()
        for j in range(1, len(views)):
            net, rel = fit_view_net(rc[0], rc[j], cfg.approx_hidden, cfg.approx_steps, cfg.approx_lr,
                                    seed=int(torch.randint(1 << 62, (1,), generator=g)))
            tensors.update(view_net_state(net, f"view{j}"))
            err[str(views[j])] = rel
            zero[str(views[j])] = zero_shift_error(rc[0], rc[j])
    return tensors, err, zero


def decoder_config(param: BasesParam | PixelViewsParam, views: tuple[int, ...], approx: bool, clamp: bool) -> dict:
    cfg = {"views": list(views), "approx": approx, "clamp": bool(clamp)}
    if isinstance(param, BasesParam):
        cfg.update(low_shape=list(param.low_shape), size=param.size)
    return cfg


@register_method("ssdd", "boosted self-supervised distillation: PCA bases, rotation views, tiny view networks (no labels)")
class SSDD(SelfSupervisedMethod):
    Config = SSDDConfig

    def distill_set(self, teacher, g):
        ds, cfg, dev = self.ctx.dataset, self.cfg, self.ctx.device
        check_config(cfg)
        views = tuple(int(v) % 4 for v in cfg.views)
        if views[0] != 0 or len(set(views)) != len(views):
            raise TinysetError(f"method_args.views must start with 0 and not repeat, got {list(cfg.views)}")
        if cfg.init_bases not in BASES:
            raise TinysetError(f"method_args.init_bases must be one of {', '.join(BASES)}, got {cfg.init_bases!r}")
        c, size = ds.info.channels, ds.info.image_size
        low = size if _no_bases(cfg) else int(cfg.low_res or max(1, size // 2))
        low_shape = (c, low, low)
        approx = bool(cfg.approx and len(views) > 1)
        eff = dataclasses.replace(cfg, views=views, approx=approx)
        budget = budget_floats(cfg, ds.info.shape)
        m = ssdd_size(budget, eff, low_shape, teacher.dim) if budget is not None else cfg.m
        idx = choose_real(ds, m, g)
        x0, _ = ds.train.get_batch(idx)
        # the teacher's features of the chosen images under every view (their clean, upright crops)
        f0 = features_of(teacher.encoder, x0, views, dev)
        pidx = torch.randperm(len(ds.train), generator=g)[: cfg.pca_samples]
        if cfg.init_bases == "pca":  # PCA of a fixed random sample of real images (low resolution) and of their features
            xp, _ = ds.train.get_batch(pidx)
            ib = pca_bases(downsample(xp, low), cfg.image_bases)
            rb = pca_bases(features_of(teacher.encoder, xp, views, dev).flatten(0, 1), cfg.repr_bases)
        elif cfg.init_bases == "random":
            ib = random_bases(cfg.image_bases, math.prod(low_shape), g)
            rb = random_bases(cfg.repr_bases, teacher.dim, g)
        if _no_bases(cfg):
            param = PixelViewsParam(x0, f0, clamp=cfg.clamp)
        else:
            icoef = project(downsample(x0, low), ib)
            rcoef = torch.stack([project(f0[j], rb) for j in range(len(views))])
            param = BasesParam(icoef, ib, rcoef, rb, low_shape, size, clamp=cfg.clamp)
        support = BasesSupport(param, views)
        stats = {"steps": 0}
        if cfg.steps > 0:
            real = make_real(ds, cfg, views, teacher, dev, g)
            stats = run_krr_st(support, ds, real, cfg, dev, g, self.ctx.runlog, self.ctx.progress, self.name)
        param = param.cpu()
        tensors, approx_err, zero_err = store_set(param, views, approx, cfg, g)
        dcfg = decoder_config(param, views, approx, cfg.clamp)
        from ..artifact.bases_decoder import decode_bases

        with torch.no_grad():
            optimised = all_views(param.images(), views)
        decoded = decode_bases(tensors, dcfg)["images"]
        if not torch.allclose(decoded, optimised, rtol=0, atol=1e-5):
            raise TinysetError(f"internal: the stored set decodes to other pixels than were optimised "
                               f"(max difference {float((decoded - optimised).abs().max()):.2e})")
        floats = sum(t.numel() for t in tensors.values())
        expected = ssdd_floats(m, eff, low_shape, teacher.dim)
        if floats != expected:
            raise TinysetError(f"internal: stored {floats} floats, the budget arithmetic says {expected}")
        stats.update(m=m, stored_floats=floats, approx_relative_error=approx_err, approx_zero_shift_error=zero_err,
                     source_indices=idx.tolist())
        return {"tensors": tensors, "decoder": {"name": "bases", "config": dcfg}, "stats": stats}
