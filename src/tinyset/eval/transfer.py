"""Transfer evaluation of distilled sets: pre-train a fresh network on the set, then on each target
dataset (resized to the source resolution and channel count) fit a linear probe on its frozen
features and fine-tune it end to end; mean +- std over seeds.

- Self-supervised sets (image, target representation) pre-train by MSE to the targets; labelled
  sets (a random labelled subset, DM, E2D, ...) pre-train by cross-entropy on their labels, so the
  papers' supervised baselines sit in the same table. ``images=None`` is the no-pre-training
  baseline (same network, random initialisation, same protocol).
- Every set gets the same number of optimiser steps (``pretrain_steps``), whatever its size: with
  epochs a set with 4x the pairs would get 4x the steps. ``pretrain_steps=None`` falls back to
  ``pretrain_epochs`` epochs (the reference's 1,000-epoch recipe is epoch-based).
- A set is pre-trained once per seed and that network is reused for every target (the reference
  does the same); each target is probed and fine-tuned from a copy.
- Each target is normalised by its own mean/std (computed from its adapted training images, as the
  reference normalises every dataset by its own statistics); ``target_normalization="source"`` keeps
  the source's.
- ``probe_encoder`` gives a frozen encoder's own linear-probe accuracy (the SSL teacher's: the
  ceiling the distilled sets are read against) under the same probe."""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import augment as A
from ..data.base import Dataset, Split, TensorSplit, channel_stats
from ..errors import TinysetError
from ..kd import build_kd_loss
from ..models import get_model
from ..utils.seeding import derive_seed, generator
from .schedules import get_schedule
from .trainer import TrainSpec, train

log = logging.getLogger(__name__)

MODES = ("linear", "finetune")


@dataclass
class TransferConfig:
    model: str = "convnet:depth=3,width=64"  # the network pre-trained on the set
    seeds: int = 3
    # equal optimiser steps for every set (None: pretrain_epochs epochs, so larger sets get more steps)
    pretrain_steps: int | None = 2000
    pretrain_epochs: int = 100  # only when pretrain_steps is None
    pretrain_batch: int = 256
    # tinyset's AdamW + cosine; the reference pre-trains KRR-ST sets by SGD lr 0.1, momentum 0.9,
    # weight decay 1e-3, constant lr, 1,000 epochs (pretrain_optimizer=sgd, pretrain_lr=0.1,
    # pretrain_weight_decay=1e-3, pretrain_schedule=constant)
    pretrain_optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)
    pretrain_lr: float = 1e-3
    pretrain_weight_decay: float = 1e-4
    pretrain_schedule: str = "cosine"  # over the steps; cosine | constant | ...
    # auto: none for regression pairs (as the reference), pad-crop + flip for labelled sets (the
    # reference uses DSA there); none | shift (pad-crop + flip) | flip
    pretrain_augment: str = "auto"
    target_normalization: str = "target"  # target (its own mean/std, the reference) | source
    probe_steps: int = 300  # full-batch Adam on standardised frozen features
    probe_lr: float = 1e-2
    probe_weight_decay: float = 1e-4
    finetune_epochs: int = 10  # on the target (the same target for every set, so equal steps)
    finetune_lr: float = 1e-3  # AdamW, cosine, pad-crop + flip
    finetune_batch: int = 128
    max_train: int | None = 5000  # target training images used (evenly spaced; CPU budget)
    max_test: int | None = 2000
    modes: tuple[str, ...] = MODES


def check_transfer_config(cfg: TransferConfig) -> None:
    unknown = set(cfg.modes) - set(MODES)
    if unknown:
        raise TinysetError(f"unknown transfer modes {sorted(unknown)}; choose linear and/or finetune")
    if cfg.pretrain_optimizer not in ("adamw", "sgd"):
        raise TinysetError(f"transfer pretrain_optimizer must be adamw or sgd, got {cfg.pretrain_optimizer!r}")
    if cfg.pretrain_augment not in ("auto", "none", "shift", "flip"):
        raise TinysetError(f"transfer pretrain_augment must be auto, none, shift or flip, got {cfg.pretrain_augment!r}")
    if cfg.target_normalization not in ("target", "source"):
        raise TinysetError(f"transfer target_normalization must be target or source, got {cfg.target_normalization!r}")
    if cfg.pretrain_steps is not None and cfg.pretrain_steps < 0:
        raise TinysetError(f"transfer pretrain_steps must be >= 0, got {cfg.pretrain_steps}")


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


class IndexSplit(Split):
    """The samples ``index`` of a split, labels remapped by ``relabel`` (old class -> new class)."""

    def __init__(self, inner: Split, index: torch.Tensor, relabel: dict[int, int] | None = None):
        self.inner, self.index = inner, index.long()
        t = inner.targets[self.index] if inner.targets is not None else None
        if t is not None and relabel:
            t = torch.tensor([relabel[int(c)] for c in t], dtype=torch.long)
        self.targets = t

    def __len__(self):
        return len(self.index)

    def _load(self, indices):
        return self.inner.get_batch(self.index[indices])[0]


def _even(index: torch.Tensor, limit: int | None) -> torch.Tensor:
    n = len(index)
    return index[torch.linspace(0, n - 1, limit).round().long().unique()] if limit and limit < n else index


def subset_dataset(ds: Dataset, classes: list[int] | tuple[int, ...] | None = None, train_limit: int | None = None,
                   test_limit: int | None = None, name: str | None = None) -> Dataset:
    """``ds`` restricted to ``classes`` (relabelled 0..k-1 in that order) and to at most
    ``train_limit``/``test_limit`` evenly spaced samples; its mean/std recomputed from the kept
    training images (a subset is its own dataset)."""
    classes = list(range(ds.info.num_classes)) if classes is None else [int(c) for c in classes]
    relabel = {c: i for i, c in enumerate(classes)}

    def pick(split: Split | None, limit):
        if split is None:
            return None
        if split.targets is None:
            raise TinysetError(f"{ds.info.name}: a class subset needs labels")
        keep = torch.nonzero(torch.isin(split.targets, torch.tensor(classes))).flatten()
        return IndexSplit(split, _even(keep, limit), relabel)

    train, test = pick(ds.train, train_limit), pick(ds.test, test_limit)
    mean, std = channel_stats(train) if ds.info.kind == "image" else (ds.info.mean, ds.info.std)
    default = f"{ds.info.name}[{','.join(map(str, classes))}]" + (f"x{len(train)}" if train_limit else "")
    info = dataclasses.replace(ds.info, name=name or default, num_classes=len(classes),
                               class_names=tuple(ds.info.class_names[c] for c in classes), mean=mean, std=std)
    return Dataset(info, train, test)


class _MSE(nn.Module):
    def forward(self, s, t, y):
        return F.mse_loss(s, y)


def _split_head(model: nn.Module) -> tuple[nn.Module, int]:
    from ..models.encoder import encoder_from_model, head_in_features

    d = head_in_features(model)
    return encoder_from_model(model), d


def pretrain_step_count(n: int, cfg: TransferConfig) -> int:
    """Optimiser steps a set of ``n`` pairs gets: ``pretrain_steps`` for every set, or epochs x batches."""
    if n == 0:
        return 0
    if cfg.pretrain_steps is not None:
        return int(cfg.pretrain_steps)
    return int(cfg.pretrain_epochs) * math.ceil(n / min(cfg.pretrain_batch, n))


def _augment(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "shift":
        return A.random_shift_flip(x, max(1, x.shape[-1] // 8), generator=g)
    if kind == "flip":
        return A.random_flip(x, generator=g)
    return x


def pretrain(images: torch.Tensor | None, targets: torch.Tensor | None, info, cfg: TransferConfig, seed: int, device,
             progress: bool = False, labels: torch.Tensor | None = None) -> tuple[nn.Module, int]:
    """A fresh network (seeded) trained on the set: MSE to ``targets``, or cross-entropy on ``labels``;
    ``pretrain_step_count`` steps of random batches (each pass over the set reshuffled). Returns its
    body (features) and feature size."""
    device = torch.device(device)
    if labels is not None:
        dim = max(int(info.num_classes), int(labels.max()) + 1 if len(labels) else 1)
    else:
        dim = targets.shape[1] if targets is not None else 2
    tinfo = dataclasses.replace(info, num_classes=dim, class_names=tuple(str(i) for i in range(dim)))
    torch.manual_seed(derive_seed(seed, "transfer-init"))
    model = get_model(cfg.model, tinfo)
    if images is not None and len(images):
        n = len(images)
        steps = pretrain_step_count(n, cfg)
        bs = min(cfg.pretrain_batch, n)
        model = model.to(device).train()
        if cfg.pretrain_optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=cfg.pretrain_lr, momentum=0.9, weight_decay=cfg.pretrain_weight_decay)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=cfg.pretrain_weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, get_schedule(cfg.pretrain_schedule, steps))
        aug = cfg.pretrain_augment if cfg.pretrain_augment != "auto" else ("shift" if labels is not None else "none")
        g = generator(derive_seed(seed, "transfer-pretrain"))
        x_all = images.float()
        y_all = labels.long() if labels is not None else targets.float()
        order, pos = torch.randperm(n, generator=g), 0
        for step in range(steps):
            if pos + bs > n:  # a new pass over the set: reshuffle (the tail of the last pass is dropped)
                order, pos = torch.randperm(n, generator=g), 0
            idx = order[pos:pos + bs]
            pos += bs
            x = _augment(x_all[idx], aug, g).to(device)
            y = y_all[idx].to(device)
            out = model(x)
            loss = F.cross_entropy(out, y) if labels is not None else F.mse_loss(out, y)
            if not torch.isfinite(loss):
                raise TinysetError(f"transfer pre-training: loss became {float(loss)} at step {step}; lower pretrain_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return _split_head(model.cpu().eval())


@torch.no_grad()
def _features(body: nn.Module, split: Split, device, batch: int = 500) -> torch.Tensor:
    body.eval()
    return torch.cat([body(split.get_batch(i)[0].to(device)).float().cpu() for i in torch.arange(len(split)).split(batch)])


def fit_probe(ftr: torch.Tensor, ytr: torch.Tensor, num_classes: int, cfg: TransferConfig, seed: int):
    """A linear classifier on standardised features: (classifier, mean, std)."""
    mu, sd = ftr.mean(0), ftr.std(0).clamp_min(1e-6)
    torch.manual_seed(derive_seed(seed, "probe"))
    clf = nn.Linear(ftr.shape[1], num_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.probe_lr, weight_decay=cfg.probe_weight_decay)
    z = (ftr - mu) / sd
    for _ in range(cfg.probe_steps):
        loss = F.cross_entropy(clf(z), ytr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf, mu, sd


def linear_probe(body: nn.Module, train_split: Split, test_split: Split, num_classes: int, cfg: TransferConfig, seed: int,
                 device) -> float:
    body = body.to(device)
    ftr, fte = _features(body, train_split, device), _features(body, test_split, device)
    clf, mu, sd = fit_probe(ftr, train_split.targets, num_classes, cfg, seed)
    with torch.no_grad():
        return 100.0 * float((clf((fte - mu) / sd).argmax(1) == test_split.targets).float().mean())


def finetune(body: nn.Module, dim: int, train_split: Split, test_split: Split, num_classes: int, cfg: TransferConfig,
             seed: int, device, progress: bool = False) -> float:
    """Fine-tunes ``body`` in place (pass a copy to keep it)."""
    torch.manual_seed(derive_seed(seed, "finetune-head"))
    model = nn.Sequential(body, nn.Linear(dim, num_classes))
    side = train_split.get_batch([0])[0].shape[-1]
    spec = TrainSpec(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch, optimizer="adamw", lr=cfg.finetune_lr,
                     weight_decay=5e-4, augment="shift", shift_pad=max(1, side // 8), channels_last=False)
    res = train(model, train_split, spec, build_kd_loss("ce"), test_split=test_split, device=device,
                seed=derive_seed(seed, "finetune"), desc="finetune", progress=progress)
    return float(res.test_accuracy)


def renormalized(body: nn.Module, mean, std) -> nn.Module:
    """A copy of ``body`` whose input normalisation (``NormalizedModel``'s buffers) is ``mean``/``std``."""
    b = copy.deepcopy(body)
    if isinstance(getattr(b, "mean", None), torch.Tensor) and isinstance(getattr(b, "std", None), torch.Tensor):
        with torch.no_grad():
            b.mean.copy_(torch.tensor(mean, dtype=b.mean.dtype).view_as(b.mean))
            b.std.copy_(torch.tensor(std, dtype=b.std.dtype).view_as(b.std))
    return b


@dataclass
class TransferTarget:
    """A target dataset and the modes run on it (None: the config's)."""

    name: str
    dataset: Dataset
    modes: tuple[str, ...] | None = None


@dataclass
class _Prepared:
    name: str
    train: Split
    test: Split
    num_classes: int
    modes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def adapt_target(target: Dataset, shape: tuple[int, ...], cfg: TransferConfig) -> tuple[AdaptedSplit, AdaptedSplit]:
    if target.info.kind != "image":
        raise TinysetError(f"transfer target {target.info.name} holds vectors, not images")
    if target.test is None:
        raise TinysetError(f"transfer target {target.info.name} has no test split")
    return AdaptedSplit(target.train, shape, cfg.max_train), AdaptedSplit(target.test, shape, cfg.max_test)


def _materialise(split: Split) -> TensorSplit:
    x = torch.cat([split.get_batch(i)[0] for i in torch.arange(len(split)).split(1000)])
    return TensorSplit(x, split.targets)


def prepare_targets(targets: list[TransferTarget], source_info, cfg: TransferConfig) -> list[_Prepared]:
    """Each target adapted to the source's shape, loaded once into memory, with its own mean/std."""
    out = []
    for t in targets:
        tr, te = adapt_target(t.dataset, tuple(source_info.shape), cfg)
        tr, te = _materialise(tr), _materialise(te)
        if cfg.target_normalization == "target":
            mean, std = channel_stats(tr)
        else:
            mean, std = tuple(source_info.mean), tuple(source_info.std)
        modes = tuple(t.modes or cfg.modes)
        unknown = set(modes) - set(MODES)
        if unknown:
            raise TinysetError(f"unknown transfer modes {sorted(unknown)}; choose linear and/or finetune")
        out.append(_Prepared(t.name, tr, te, t.dataset.info.num_classes, modes, mean, std))
    return out


def _summary(vals: list[float]) -> dict:
    return {"accuracies": vals, "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "seeds": len(vals)}


def evaluate_transfer_targets(images: torch.Tensor | None, targets: torch.Tensor | None, source_info,
                              target_list: list[TransferTarget], cfg: TransferConfig, device="cpu", seed: int = 0,
                              progress: bool = False, labels: torch.Tensor | None = None,
                              prepared: list[_Prepared] | None = None) -> dict[str, dict]:
    """{target name: {"linear": {...}, "finetune": {...}, ...}} over ``cfg.seeds`` pre-trainings, each
    pre-trained once and reused for every target. ``prepared`` (from ``prepare_targets``) skips
    loading the targets again."""
    check_transfer_config(cfg)
    device = torch.device(device)
    prep = prepared if prepared is not None else prepare_targets(target_list, source_info, cfg)
    n = 0 if images is None else len(images)
    res = {p.name: {m: [] for m in p.modes} for p in prep}
    for s in range(cfg.seeds):
        sseed = derive_seed(seed, "transfer", s)
        body, dim = pretrain(images, targets, source_info, cfg, sseed, device, progress, labels=labels)
        for p in prep:
            b = renormalized(body, p.mean, p.std)  # a copy: the pre-trained body serves every target
            if "linear" in p.modes:  # the probe leaves the copy untouched, so fine-tuning starts from the same weights
                res[p.name]["linear"].append(linear_probe(b, p.train, p.test, p.num_classes, cfg, sseed, device))
            if "finetune" in p.modes:
                res[p.name]["finetune"].append(finetune(b, dim, p.train, p.test, p.num_classes, cfg, sseed, device, progress))
    out = {}
    for p in prep:
        out[p.name] = {"target": p.name, "train_images": len(p.train), "test_images": len(p.test), "pretrain_pairs": n,
                       "pretrain_steps": pretrain_step_count(n, cfg),
                       "pretrain_loss": "none" if images is None else ("cross-entropy" if labels is not None else "mse"),
                       "normalization": cfg.target_normalization, **{m: _summary(v) for m, v in res[p.name].items()}}
    return out


def evaluate_transfer(images: torch.Tensor | None, targets: torch.Tensor | None, source_info, target: Dataset,
                      cfg: TransferConfig, device="cpu", seed: int = 0, progress: bool = False,
                      labels: torch.Tensor | None = None) -> dict:
    """One target: {"linear": {...}, "finetune": {...}} accuracies (percent) over ``cfg.seeds`` pre-trainings."""
    (rep,) = evaluate_transfer_targets(images, targets, source_info, [TransferTarget(target.info.name, target)], cfg,
                                       device, seed, progress, labels=labels).values()
    return rep


def probe_encoder(encoder: nn.Module, target_list: list[TransferTarget], source_info, cfg: TransferConfig, device="cpu",
                  seed: int = 0, prepared: list[_Prepared] | None = None) -> dict[str, dict]:
    """A frozen encoder's own linear-probe accuracy on each target (the SSL teacher's: what the
    distilled sets are read against), under the same probe and normalisation as the students."""
    check_transfer_config(cfg)
    prep = prepared if prepared is not None else prepare_targets(target_list, source_info, cfg)
    out = {}
    for p in prep:
        accs = [linear_probe(renormalized(encoder, p.mean, p.std), p.train, p.test, p.num_classes, cfg,
                             derive_seed(seed, "transfer", s), device) for s in range(cfg.seeds)]
        out[p.name] = {"target": p.name, "train_images": len(p.train), "test_images": len(p.test), "pretrain_pairs": 0,
                       "linear": _summary(accs)}
    return out


def markdown(report: dict, title: str) -> str:
    lines = [f"### {title}", "", "| pre-training | mode | seeds | accuracy % (mean ± std) |", "|---|---|---|---|"]
    for name, r in report["rows"].items():
        for mode in MODES:
            if mode in r:
                lines.append(f"| {name} | {mode} | {r[mode]['seeds']} | {r[mode]['mean']:.2f} ± {r[mode]['std']:.2f} |")
    return "\n".join(lines) + "\n"
