"""Transfer evaluation of self-supervised distilled sets: pre-train a fresh network on the
distilled (image, target representation) pairs by MSE, then on a target dataset (resized to the
source resolution and channel count) fit a linear probe on its frozen features and fine-tune it
end to end; mean +- std over seeds. ``images=None`` is the no-pre-training baseline (same network,
random initialisation, same protocol)."""
from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import Dataset, Split, TensorSplit
from ..errors import TinysetError
from ..kd import build_kd_loss
from ..models import get_model
from ..utils.seeding import derive_seed
from .trainer import TrainSpec, train

log = logging.getLogger(__name__)


@dataclass
class TransferConfig:
    model: str = "convnet:depth=3,width=64"  # the network pre-trained on the pairs
    seeds: int = 3
    pretrain_epochs: int = 100
    pretrain_batch: int = 256
    pretrain_lr: float = 1e-3  # AdamW, cosine
    pretrain_weight_decay: float = 1e-4
    probe_steps: int = 300  # full-batch Adam on standardised frozen features
    probe_lr: float = 1e-2
    probe_weight_decay: float = 1e-4
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3  # AdamW, cosine, pad-crop + flip
    finetune_batch: int = 128
    max_train: int | None = 5000  # target training images used (evenly spaced; CPU budget)
    max_test: int | None = 2000
    modes: tuple[str, ...] = ("linear", "finetune")


class AdaptedSplit(Split):
    """A target split seen at the source's shape: resized (bilinear, antialiased) and with channels
    repeated (grey -> RGB) or averaged (RGB -> grey); optionally a fixed evenly spaced subset."""

    def __init__(self, inner: Split, shape: tuple[int, ...], limit: int | None = None):
        self.inner, self.shape = inner, tuple(shape)
        n = len(inner)
        self.index = torch.linspace(0, n - 1, limit).round().long().unique() if limit and limit < n else torch.arange(n)
        self.targets = inner.targets[self.index] if inner.targets is not None else None

    def __len__(self):
        return len(self.index)

    def _load(self, indices):
        x, _ = self.inner.get_batch(self.index[indices])
        c, h, w = self.shape
        if x.shape[1] != c:
            x = x.repeat(1, c, 1, 1) if x.shape[1] == 1 else x.mean(1, keepdim=True).repeat(1, c, 1, 1)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        return x


class _MSE(nn.Module):
    def forward(self, s, t, y):
        return F.mse_loss(s, y)


def _split_head(model: nn.Module) -> tuple[nn.Module, int]:
    from ..models.encoder import encoder_from_model, head_in_features

    d = head_in_features(model)
    return encoder_from_model(model), d


def pretrain(images: torch.Tensor | None, targets: torch.Tensor | None, info, cfg: TransferConfig, seed: int, device,
             progress: bool = False) -> tuple[nn.Module, int]:
    """A fresh network (seeded) trained on the pairs; returns its body (features) and feature size."""
    dim = targets.shape[1] if targets is not None else 2
    tinfo = dataclasses.replace(info, num_classes=dim, class_names=tuple(str(i) for i in range(dim)))
    torch.manual_seed(derive_seed(seed, "transfer-init"))
    model = get_model(cfg.model, tinfo)
    if images is not None:
        spec = TrainSpec(epochs=cfg.pretrain_epochs, batch_size=min(cfg.pretrain_batch, len(images)), optimizer="adamw",
                         lr=cfg.pretrain_lr, weight_decay=cfg.pretrain_weight_decay, augment="none", flip=False,
                         channels_last=False)
        train(model, TensorSplit(images.float(), targets.float()), spec, _MSE(), device=device,
              seed=derive_seed(seed, "transfer-pretrain"), desc="pretrain", progress=progress)
    return _split_head(model.cpu())


@torch.no_grad()
def _features(body: nn.Module, split: Split, device, batch: int = 500) -> torch.Tensor:
    body.eval()
    return torch.cat([body(split.get_batch(i)[0].to(device)).float().cpu() for i in torch.arange(len(split)).split(batch)])


def linear_probe(body: nn.Module, train_split: Split, test_split: Split, num_classes: int, cfg: TransferConfig, seed: int,
                 device) -> float:
    body = body.to(device)
    ftr, fte = _features(body, train_split, device), _features(body, test_split, device)
    mu, sd = ftr.mean(0), ftr.std(0).clamp_min(1e-6)
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    torch.manual_seed(derive_seed(seed, "probe"))
    clf = nn.Linear(ftr.shape[1], num_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.probe_lr, weight_decay=cfg.probe_weight_decay)
    ytr = train_split.targets
    for _ in range(cfg.probe_steps):
        loss = F.cross_entropy(clf(ftr), ytr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return 100.0 * float((clf(fte).argmax(1) == test_split.targets).float().mean())


def finetune(body: nn.Module, dim: int, train_split: Split, test_split: Split, num_classes: int, cfg: TransferConfig,
             seed: int, device, progress: bool = False) -> float:
    torch.manual_seed(derive_seed(seed, "finetune-head"))
    model = nn.Sequential(body, nn.Linear(dim, num_classes))
    spec = TrainSpec(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch, optimizer="adamw", lr=cfg.finetune_lr,
                     weight_decay=5e-4, augment="shift", shift_pad=max(1, train_split.shape[-1] // 8), channels_last=False)
    res = train(model, train_split, spec, build_kd_loss("ce"), test_split=test_split, device=device,
                seed=derive_seed(seed, "finetune"), desc="finetune", progress=progress)
    return float(res.test_accuracy)


def adapt_target(target: Dataset, shape: tuple[int, ...], cfg: TransferConfig) -> tuple[AdaptedSplit, AdaptedSplit]:
    if target.info.kind != "image":
        raise TinysetError(f"transfer target {target.info.name} holds vectors, not images")
    if target.test is None:
        raise TinysetError(f"transfer target {target.info.name} has no test split")
    return AdaptedSplit(target.train, shape, cfg.max_train), AdaptedSplit(target.test, shape, cfg.max_test)


def _summary(vals: list[float]) -> dict:
    return {"accuracies": vals, "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "seeds": len(vals)}


def evaluate_transfer(images: torch.Tensor | None, targets: torch.Tensor | None, source_info, target: Dataset,
                      cfg: TransferConfig, device="cpu", seed: int = 0, progress: bool = False) -> dict:
    """{"linear": {...}, "finetune": {...}} accuracies (percent) over ``cfg.seeds`` pre-trainings."""
    device = torch.device(device)
    unknown = set(cfg.modes) - {"linear", "finetune"}
    if unknown:
        raise TinysetError(f"unknown transfer modes {sorted(unknown)}; choose linear and/or finetune")
    tr, te = adapt_target(target, tuple(source_info.shape), cfg)
    out: dict = {"target": target.info.name, "train_images": len(tr), "test_images": len(te),
                 "pretrain_pairs": 0 if images is None else len(images)}
    res: dict[str, list[float]] = {m: [] for m in cfg.modes}
    for s in range(cfg.seeds):
        sseed = derive_seed(seed, "transfer", s)
        body, dim = pretrain(images, targets, source_info, cfg, sseed, device, progress)
        if "linear" in cfg.modes:  # the probe leaves the body untouched, so fine-tuning starts from the same weights
            res["linear"].append(linear_probe(body, tr, te, target.info.num_classes, cfg, sseed, device))
        if "finetune" in cfg.modes:
            res["finetune"].append(finetune(body, dim, tr, te, target.info.num_classes, cfg, sseed, device, progress))
    out.update({m: _summary(v) for m, v in res.items()})
    return out


def markdown(report: dict, title: str) -> str:
    lines = [f"### {title}", "", "| pre-training | mode | seeds | accuracy % (mean ± std) |", "|---|---|---|---|"]
    for name, r in report["rows"].items():
        for mode in ("linear", "finetune"):
            if mode in r:
                lines.append(f"| {name} | {mode} | {r[mode]['seeds']} | {r[mode]['mean']:.2f} ± {r[mode]['std']:.2f} |")
    return "\n".join(lines) + "\n"
