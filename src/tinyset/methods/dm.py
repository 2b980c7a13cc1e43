"""DM, distribution matching (Zhao & Bilen, WACV 2023), with an optional quantizer in the loop
(QuADD, CVPR 2026).

Each step draws a freshly initialised embedding network and, per class, matches the mean embedding
of a real batch with the mean embedding of the class's synthetic samples, under the same random
augmentation (siamese: one crop box and flip shared by both batches):
``loss = sum_c || mean f(aug(real_c)) - mean f(aug(syn_c)) ||^2``.

With ``quantizer.name`` set, the optimised tensor is a latent and every forward pass sees
``Q(latent)`` (see ``quant/inloop.py``); the quantizer's clips/levels learn alongside (Adam, their
own lr), and the stored set is the codes + state, decoding to exactly the last forward's input.
All classes run in one unit (the loss is a sum over classes), so per-set clips are possible.

Sized for CPU: a narrow ConvNet (width 32, instance norm) and hundreds of steps, not 20,000.
``lr_units`` says what ``lr`` is measured in: ``pixels`` ([0, 1] pixel steps; a latent in
normalised units gets ``lr / mean(std)``) or ``normalized`` (steps in units of the data's std; a
raw latent gets ``lr * mean(std)``). ``auto``: pixels for images, normalised units for vectors
(raw features such as dBm have no [0, 1] scale: lr 0.01 dB per step barely moves beam data). The
resolved units, the latent's lr and the quantizer's space are recorded in the unit's stats."""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..data import augment as A
from ..errors import TinysetError
from ..models import get_model
from ..quant.inloop import LoopQuantizer, QuantizerConfig
from .base import Method, Unit, UnitResult, register_method, sample_class_indices
from .diverse import features, graph_cut_select

log = logging.getLogger(__name__)


@dataclass
class DMConfig:
    iterations: int = 300
    lr: float = 0.01  # Adam, in lr_units
    lr_units: str = "auto"  # pixels | normalized | auto (images: pixels; vectors: normalized)
    batch_real: int = 64  # real samples per class per step (256 in the paper; CPU budget)
    net: str | None = None  # embedding net; default convnet:depth=3,width=32,norm=instance (images) / mlp:hidden=128 (vectors)
    init: str = "real"  # real | noise | diverse (graph-cut choice among quantized real samples)
    diverse_pool: int = 10  # pool = diverse_pool x ipc real samples per class
    diverse_lambda: float = 1.0
    crop_scale: tuple[float, float] = (0.5, 1.0)  # siamese augmentation of images (None-equivalent: (1, 1))
    flip: bool = True
    log_every: int = 50
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)


def embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features of a (Normalized) ConvNet or MLP."""
    net = getattr(model, "net", model)
    z = (x - model.mean) / model.std if hasattr(model, "mean") else x
    if hasattr(net, "features"):
        return torch.flatten(net.features(z), 1)
    if hasattr(net, "net"):  # MLP: everything but the last linear layer
        return net.net[:-1](z)
    raise TinysetError(f"DM cannot take features from {type(net).__name__}; use a convnet or mlp")


@register_method("dm", "DM: match per-class mean embeddings under fresh random nets; quantizer in the loop (QuADD) optional")
class DM(Method):
    Config = DMConfig
    classes_per_unit = None  # every class in one unit

    def _net_name(self) -> str:
        if self.cfg.net:
            return self.cfg.net
        return "convnet:depth=3,width=32,norm=instance" if self.ctx.dataset.info.kind == "image" else "mlp:hidden=128,depth=2"

    def _init(self, unit: Unit, g: torch.Generator) -> torch.Tensor:
        ds, info = self.ctx.dataset, self.ctx.dataset.info
        k = unit.per_class
        if self.cfg.init == "noise":
            return torch.rand((len(unit.classes) * k, *info.shape), generator=g) if info.kind == "image" else \
                torch.tensor(info.mean) + torch.tensor(info.std) * torch.randn((len(unit.classes) * k, *info.shape), generator=g)
        if self.cfg.init == "real":
            idx = torch.cat([sample_class_indices(ds, c, k, g) for c in unit.classes])
            return ds.train.get_batch(idx)[0]
        if self.cfg.init != "diverse":
            raise TinysetError(f"dm init must be real, noise or diverse, not {self.cfg.init!r}")
        out = []
        for c in unit.classes:
            pool = ds.train.get_batch(sample_class_indices(ds, c, min(len(ds.train.class_indices(c)), self.cfg.diverse_pool * k), g))[0]
            seen = pool
            if self.cfg.quantizer.enabled:  # choose among the samples as they will be stored
                pq = LoopQuantizer(self.cfg.quantizer, pool, info)
                with torch.no_grad():
                    seen = pq(pq.latent(pool))
            out.append(pool[graph_cut_select(features(seen), k, self.cfg.diverse_lambda)])
        return torch.cat(out)

    def run_unit(self, unit: Unit, g: torch.Generator) -> UnitResult:
        cfg, ctx = self.cfg, self.ctx
        ds, info, dev = ctx.dataset, ctx.dataset.info, ctx.device
        labels = unit.labels()
        x0 = self._init(unit, g).float()
        lq = LoopQuantizer(cfg.quantizer, x0, info).to(dev) if cfg.quantizer.enabled else None
        latent = (lq.latent(x0) if lq else x0.clone()).to(dev).requires_grad_(True)
        units = cfg.lr_units if cfg.lr_units != "auto" else ("pixels" if info.kind == "image" else "normalized")
        if units not in ("pixels", "normalized"):
            raise TinysetError(f"dm lr_units must be pixels, normalized or auto, not {cfg.lr_units!r}")
        latent_normalized = lq is not None and lq.space.mean is not None
        std = statistics.fmean(info.std)
        if units == "pixels":
            lr = cfg.lr / std if latent_normalized else cfg.lr
        else:
            lr = cfg.lr if latent_normalized else cfg.lr * std
        opt = torch.optim.Adam([latent], lr=lr)
        qopt = lq.optimizer() if lq is not None else None
        k = unit.per_class
        image = info.kind == "image"
        t0 = time.perf_counter()
        for it in tqdm(range(cfg.iterations), desc=f"dm {unit.key}", disable=not ctx.progress, leave=False):
            torch.manual_seed(int(torch.randint(1 << 62, (1,), generator=g)))  # the fresh net's init
            net = get_model(self._net_name(), info).to(dev).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            syn = lq(latent) if lq is not None else latent
            reals, syns = [], []
            for j, c in enumerate(unit.classes):
                xr = ds.train.get_batch(sample_class_indices(ds, c, cfg.batch_real, g))[0].to(dev)
                xs = syn[j * k:(j + 1) * k]
                if image:  # siamese augmentation: one box and flip per class, shared by both batches
                    h, w = info.shape[1:]
                    box = A.sample_rrc_boxes(1, h, w, tuple(cfg.crop_scale), generator=g)
                    flip = torch.rand(1, generator=g) < 0.5 if cfg.flip else None
                    xr = A.crop_resize(xr, box.expand(len(xr), 4), (h, w), flip.expand(len(xr)) if flip is not None else None)
                    xs = A.crop_resize(xs, box.expand(len(xs), 4), (h, w), flip.expand(len(xs)) if flip is not None else None)
                reals.append(xr)
                syns.append(xs)
            # one forward for all real batches and one for all synthetic ones (per-sample norms only)
            with torch.no_grad():
                fr = embed(net, torch.cat(reals))
            fs = embed(net, torch.cat(syns))
            n_c = len(unit.classes)
            mr = fr.view(n_c, -1, fr.shape[1]).mean(1) if all(len(r) == len(reals[0]) for r in reals) else \
                torch.stack([f.mean(0) for f in fr.split([len(r) for r in reals])])
            loss = ((mr - fs.view(n_c, k, -1).mean(1)) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            if qopt is not None:
                qopt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if qopt is not None:
                qopt.step()
            elif image:
                with torch.no_grad():
                    latent.clamp_(0, 1)
            ctx.counter.forward += len(latent) + cfg.batch_real * len(unit.classes)
            ctx.counter.backward += len(latent)
            if cfg.log_every and (it % cfg.log_every == 0 or it == cfg.iterations - 1):
                ctx.runlog.write(f"dm {unit.key}", it=it, loss=float(loss.detach()))
        stats = {"iterations_run": cfg.iterations, "seconds": time.perf_counter() - t0,
                 "final_loss": float(loss.detach()) if cfg.iterations else None, "lr_units": units, "latent_lr": lr}
        if lq is not None:
            stats["quantizer_space"] = "normalized" if latent_normalized else "pixels"
        with torch.no_grad():
            if lq is None:
                x = latent.detach().clamp(0, 1) if image else latent.detach()
                return UnitResult(x.float().cpu().contiguous(), labels, stats)
            x = lq(latent).detach().float().cpu().contiguous()
            return UnitResult(x, labels, stats, encoded=lq.encoded(latent))
