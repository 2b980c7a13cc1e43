"""The one trainer: teachers, students on distilled sets and full-data KD all train here.

Every random choice (shuffling, crops, flips, CutMix) comes from one ``torch.Generator`` whose state
is checkpointed with the weights, so a run resumed after an interruption ends with exactly the
weights of an uninterrupted run."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import distributed as dist
from ..data import augment as A
from ..data.base import Split
from ..errors import TinysetError
from ..models.checkpoint import atomic_torch_save
from ..utils.hardware import warn_slow_cpu_bf16
from ..utils.progress import progress_bar
from ..utils.runlog import JsonlLog
from ..utils.seeding import generator
from .schedules import get_schedule

log = logging.getLogger(__name__)


@dataclass
class TrainSpec:
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw | adam
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    augment: str = "rrc"  # rrc (random-resized crop) | shift (pad+crop) | none
    crop_scale: tuple[float, float] = (0.08, 1.0)
    shift_pad: int = 4
    flip: bool = True
    cutmix: float = 0.0  # probability per batch
    cutmix_alpha: float = 1.0
    mixup: float = 0.0  # probability per batch; one draw picks CutMix, MixUp or neither
    mixup_alpha: float = 0.8
    ce_weight: float = 0.0  # + ce_weight x CE(student, un-mixed hard label) (E2D's trainer)
    decay_norm_and_bias: bool = True  # False: no weight decay on 1-d parameters (norm weights, biases)
    ema: float | None = None
    ema_buffers: bool = True  # False: the EMA averages parameters only, buffers are copied (E2D)
    he_da: float | None = None  # fraction of highest-energy samples re-mixed (HE-DA); None = off
    he_da_weight: float = 0.9
    he_da_mode: str = "cutmix"
    he_da_select: str = "energy"  # energy (HE-DA) | random (control: same number of random samples)
    energy_fracs: tuple[float, float] = (0.2, 0.2)  # low/high energy groups for Energy KD
    channels_last: bool = True
    amp: bool = False
    eval_batch_size: int = 500
    num_workers: int = 0  # DataLoader workers for file-backed datasets (imagefolder)


@dataclass
class TrainResult:
    test_accuracy: float | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = True) -> list[dict]:
    """timm's ``param_groups_weight_decay``: with ``decay_norm_and_bias`` off, 1-d parameters
    (BatchNorm/LayerNorm weights and every bias) go to a group without weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias or not weight_decay:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = param_groups(model, spec.weight_decay, spec.decay_norm_and_bias)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, nesterov=True)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    raise TinysetError(f"unknown optimizer {spec.optimizer!r}; choose sgd, adamw or adam")


def augment_batch(x: torch.Tensor, spec: TrainSpec, g: torch.Generator) -> torch.Tensor:
    if x.dim() != 4 or spec.augment == "none":
        return x
    if spec.augment == "rrc":
        return A.random_resized_crop(x, scale=tuple(spec.crop_scale), flip=spec.flip, generator=g)
    if spec.augment == "shift":
        return A.random_shift_flip(x, spec.shift_pad, generator=g, flip=spec.flip)
    if spec.augment == "flip":
        return A.random_flip(x, generator=g) if spec.flip else x
    raise TinysetError(f"unknown augment {spec.augment!r}; choose {', '.join(AUGMENTS)}")


AUGMENTS = ("rrc", "shift", "flip", "none")


def mix_batch(x: torch.Tensor, spec: TrainSpec, g: torch.Generator):
    """At most one of CutMix / MixUp per batch (timm's switch): one uniform draw u picks CutMix when
    u < cutmix, MixUp when u < cutmix + mixup. Returns (x, (perm, lam) or None)."""
    if x.dim() != 4 or spec.cutmix + spec.mixup <= 0:
        return x, None
    u = float(torch.rand(1, generator=g))
    if u < spec.cutmix:
        x, perm, lam = A.cutmix(x, spec.cutmix_alpha, generator=g)
    elif u < spec.cutmix + spec.mixup:
        x, perm, lam = A.mixup(x, spec.mixup_alpha, generator=g)
    else:
        return x, None
    return x, (perm, lam)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 500, channels_last: bool = False,
             distributed: bool = False) -> float:
    """Top-1 accuracy in percent on a whole split (eval mode, restored afterwards). With
    ``distributed`` (every rank holding the same weights) each rank scores a share of the split."""
    was_training = model.training
    model.eval()
    correct = 0
    indices = torch.arange(len(split))
    if distributed:
        indices = indices[dist.get_rank()::dist.get_world_size()]
    for idx in indices.split(batch_size):
        x, y = split.get_batch(idx)
        x = x.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        correct += int((model(x).argmax(1).cpu() == y).sum())
    model.train(was_training)
    if distributed:
        correct = int(dist.all_reduce_sum([correct], device if dist.info().backend == "nccl" else "cpu")[0])
    return 100.0 * correct / max(len(split), 1)


def make_ema(model: nn.Module, decay: float, buffers: bool = True) -> AveragedModel:
    """EMA of the weights, and with ``buffers`` of the BN statistics too (PyTorch's own
    ``AveragedModel`` with ``get_ema_multi_avg_fn``; the first update copies the weights). Without
    ``buffers`` (E2D's trainer) only parameters are averaged and ``update_parameters`` copies the
    live model's buffers in."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=buffers)


def _energy_thresholds(teacher: nn.Module, split: Split, spec: TrainSpec, device, seed: int) -> tuple[float, float]:
    """One pass of the frozen teacher over the shuffled, augmented training set before training
    (as Energy KD does), with its own generator so the training stream is unchanged."""
    from ..kd.energy import collect_energies, energy_thresholds

    g = generator(seed + 7919)
    order = torch.randperm(len(split), generator=g).split(spec.batch_size)
    views = (augment_batch(split.get_batch(idx)[0].to(device), spec, g) for idx in order)
    with torch.no_grad():
        energies = collect_energies(teacher, views, device)
    return energy_thresholds(energies, *spec.energy_fracs)


def _batches(split: Split, batches: list[torch.Tensor], num_workers: int):
    """Load the given index batches in order: in-process, or prefetched by DataLoader workers for
    file-backed data. The order is fixed before loading, so workers never change the result."""
    if num_workers <= 0:
        return (split.get_batch(b) for b in batches)
    return iter(torch.utils.data.DataLoader(split, sampler=[b.tolist() for b in batches], batch_size=None,
                                            num_workers=num_workers, persistent_workers=False))


def _ddp_indices(split: Split, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """This rank's indices for an epoch: DistributedSampler's shuffle (seeded by seed + epoch, the
    same on every rank), padded so every rank takes the same number of steps."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(split, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def train(
    model: nn.Module,
    split: Split,
    spec: TrainSpec,
    loss_fn: nn.Module,
    *,
    teacher: nn.Module | None = None,
    test_split: Split | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    runlog: JsonlLog | None = None,
    desc: str = "train",
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log_fields: dict | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Train ``model`` on ``split`` with ``loss_fn`` (a KD-loss module) and return last-epoch test
    accuracy. With ``checkpoint`` it saves after every epoch and resumes from an existing file.
    ``log_fields`` (e.g. stage, seed, label_mode) go into every ``log.jsonl`` record of this run.

    With ``distributed`` under torchrun the model trains as DistributedDataParallel: a
    DistributedSampler deals each epoch's shuffled indices to ranks, each rank takes
    ``ceil(batch_size / world_size)`` per step (so the global batch and the learning rate keep their
    meaning) and draws its augmentations from its own generator; rank 0 writes the checkpoint. The
    weights are not bit-identical to a one-process run (another batch composition and summation
    order), only statistically equivalent."""
    log_fields = {"stage": desc, **(log_fields or {})}
    device = torch.device(device)
    ddp = distributed and dist.is_distributed()
    # a non-DDP train under torchrun (one student per rank) behaves exactly like a single process
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    runlog = runlog or JsonlLog(None)
    if getattr(loss_fn, "needs_teacher", False) and teacher is None:
        raise TinysetError(f"loss {type(loss_fn).__name__} needs a teacher")
    if spec.he_da and teacher is None:
        raise TinysetError("HE-DA needs a teacher")
    fmt = torch.channels_last if spec.channels_last and device.type in ("cpu", "cuda") else torch.contiguous_format
    model = model.to(device)
    if split[[0]][0].dim() == 4:
        model = model.to(memory_format=fmt)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    opt = _optimizer(model, spec)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, get_schedule(spec.schedule, spec.epochs))
    ema = make_ema(model, spec.ema, spec.ema_buffers) if spec.ema else None
    g = generator(seed + 104729 * rank)  # rank 0 (and a single process) keeps the plain seed
    history: list[dict] = []
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint else None
    thresholds = None
    if ckpt_path and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gens = state.get("rank_generators") or [state["generator"]]
        if len(gens) == world:
            g.set_state(gens[rank])
        else:
            log.warning("%s: checkpoint was written by %d process(es), this run has %d; augmentation streams restart",
                        desc, len(gens), world)
        if ema and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history = state["history"]
        start_epoch = state["epoch"]
        thresholds = state.get("energy_thresholds")
        log.info("%s: resumed from %s at epoch %d", desc, ckpt_path, start_epoch)
    if getattr(loss_fn, "needs_energy_thresholds", False):
        if thresholds is None:
            thresholds = _energy_thresholds(teacher, split, spec, device, seed)
        loss_fn.set_energy_thresholds(*thresholds)
    # bf16 autocast on CUDA and on CPUs (avx512_bf16/AMX make it ~2x faster there); the loss, the
    # logits and BatchNorm's statistics stay float32 (autocast keeps batch_norm in float32)
    use_amp = spec.amp and device.type in ("cuda", "cpu")
    if use_amp and device.type == "cpu":
        warn_slow_cpu_bf16()
    n = len(split)
    t0 = time.perf_counter()
    bs = spec.batch_size
    per_epoch = len(range(0, n, bs)) - (1 if n >= 2 and n % bs == 1 else 0)  # a last batch of one is dropped
    # one bar over every batch of the run, so a long epoch still shows movement and an ETA
    bar = progress_bar(total=spec.epochs * per_epoch, initial=start_epoch * per_epoch, desc=desc, disable=not progress,
                       leave=False, unit="batch")
    for epoch in range(start_epoch, spec.epochs):
        model.train()
        if hasattr(loss_fn, "set_progress"):
            loss_fn.set_progress(epoch, spec.epochs)
        tot, count, te = 0.0, 0, time.perf_counter()
        # BatchNorm cannot train on a single sample: drop a last batch of one
        if ddp:
            batches = [b for b in _ddp_indices(split, epoch, seed, rank, world).split(-(-spec.batch_size // world))
                       if len(b) >= 2 or n < 2]  # every rank has the same count: the sampler pads
        else:
            batches = [b for b in torch.randperm(n, generator=g).split(spec.batch_size) if len(b) >= 2 or n < 2]
        for idx, (x, y) in zip(batches, _batches(split, batches, spec.num_workers)):
            x = augment_batch(x.to(device, non_blocking=True), spec, g)
            y = y.to(device) if y is not None else None
            x, mix = mix_batch(x, spec, g)
            if x.dim() == 4:
                x = x.contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x).float()
                s_logits = net(x).float()
                if mix is not None and y is not None:
                    perm, lam = mix
                    loss = lam * loss_fn(s_logits, t_logits, y) + (1 - lam) * loss_fn(s_logits, t_logits, y[perm])
                else:
                    loss = loss_fn(s_logits, t_logits, y)
                if spec.ce_weight and y is not None:
                    loss = loss + spec.ce_weight * F.cross_entropy(s_logits, y)  # the un-mixed label, as E2D
                if spec.he_da:
                    from ..kd.he_da import he_da_loss

                    loss = loss + he_da_loss(
                        net, teacher, x, t_logits, frac=spec.he_da, weight=spec.he_da_weight,
                        T=float(getattr(loss_fn, "temperature", 4.0)), mode=spec.he_da_mode, generator=g,
                        select=spec.he_da_select,
                    )
            if not torch.isfinite(loss):
                raise TinysetError(f"{desc}: loss became {float(loss.detach())} at epoch {epoch}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema:
                ema.update_parameters(model)
            tot += float(loss.detach()) * len(idx)
            count += len(idx)
            bar.update(1)
        sched.step()
        if ddp:
            tot, count = dist.all_reduce_sum([tot, count], device if dist.info().backend == "nccl" else "cpu")
        rec = {"epoch": epoch + 1, "loss": tot / max(count, 1), "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - te}
        history.append(rec)
        if not ddp or dist.is_main_process():  # the epoch loss is already reduced over ranks
            runlog.write("epoch", **{**log_fields, **rec})
        bar.set_postfix(epoch=epoch + 1, loss=f"{rec['loss']:.3f}")
        rank_generators = dist.all_gather_objects(g.get_state()) if ddp else None
        if ckpt_path and (not ddp or dist.is_main_process()):
            atomic_torch_save(
                {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "generator": g.get_state(), "ema": ema.state_dict() if ema else None,
                    "history": history, "epoch": epoch + 1, "energy_thresholds": thresholds,
                    "rank_generators": rank_generators,
                },
                ckpt_path,
            )
        if on_epoch_end:
            on_epoch_end(epoch + 1, rec)
    bar.close()
    final = ema.module if ema else model
    if ema:
        model.load_state_dict(ema.module.state_dict())
    acc = (accuracy(final, test_split, device, spec.eval_batch_size, channels_last=spec.channels_last, distributed=ddp)
           if test_split is not None else None)
    secs = time.perf_counter() - t0
    if not ddp or dist.is_main_process():
        runlog.write("train_done", **{**log_fields, "test_accuracy": acc, "seconds": secs})
    return TrainResult(test_accuracy=acc, history=history, seconds=secs, resumed_from_epoch=start_epoch)
