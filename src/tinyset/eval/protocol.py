"""The evaluation protocol every distilled set goes through: fresh students trained on the set
under each label mode, several seeds, last-epoch test accuracy (never the best epoch), with a random
real subset of the same per-class size trained under the identical protocol beside it."""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as dist
from ..config import EvalConfig, describe_protocol, protocol_overrides
from ..data.base import Dataset, TensorSplit, sample_class_indices
from ..errors import TinysetError
from ..kd import build_kd_loss
from ..kd.losses import KDLoss
from ..models import get_model
from ..utils.runlog import JsonlLog
from ..utils.seeding import derive_seed, generator
from .trainer import TrainSpec, train

log = logging.getLogger(__name__)

LABEL_MODES = ("soft", "hard", "stored")  # soft: the teacher online; stored: the artifact's stored soft labels


def eval_spec(ecfg: EvalConfig, channels_last: bool = True, amp: bool = False) -> TrainSpec:
    """The trainer's settings for a student under ``ecfg`` (its protocol's values, overrides included)."""
    return TrainSpec(
        epochs=ecfg.epochs, batch_size=ecfg.batch_size, optimizer=ecfg.optimizer, lr=ecfg.lr,
        weight_decay=ecfg.weight_decay, decay_norm_and_bias=ecfg.decay_norm_and_bias, schedule=ecfg.schedule,
        augment=ecfg.augment, crop_scale=tuple(ecfg.crop_scale), shift_pad=ecfg.shift_pad, flip=ecfg.flip,
        cutmix=ecfg.cutmix, cutmix_alpha=ecfg.cutmix_alpha, mixup=ecfg.mixup, mixup_alpha=ecfg.mixup_alpha,
        ce_weight=ecfg.ce_weight, ema=ecfg.ema, ema_buffers=ecfg.ema_buffers, channels_last=channels_last, amp=amp,
        eval_batch_size=ecfg.eval_batch_size, he_da=getattr(ecfg, "he_da", None),
    )


def random_subset(ds: Dataset, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real training images with the same per-class counts as ``labels``."""
    g = generator(seed)
    counts = torch.bincount(labels, minlength=ds.info.num_classes)
    idx = torch.cat([sample_class_indices(ds, c, int(k), g) for c, k in enumerate(counts.tolist()) if k > 0])
    x, y = ds.train.get_batch(idx)
    return x, y


@dataclass
class EvalRow:
    label_mode: str
    set: str  # "distilled" | "random"
    accuracies: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def as_dict(self) -> dict:
        return {"label_mode": self.label_mode, "set": self.set, "accuracies": self.accuracies,
                "accuracy_mean": self.mean, "accuracy_std": self.std, "seeds": len(self.accuracies)}


def kd_loss_for_eval(ecfg: EvalConfig) -> nn.Module:
    """The configured soft-label loss; ``eval.temperature`` goes to losses that take one."""
    import inspect

    from ..kd import KD_LOSSES

    params = inspect.signature(KD_LOSSES.get(ecfg.loss)).parameters
    return build_kd_loss(ecfg.loss, **({"temperature": ecfg.temperature} if "temperature" in params else {}))


class StoredLabelsLoss(KDLoss):
    """The ``stored`` label mode: the configured soft-label loss with stored logits in the teacher's
    place. The trainer hands each batch's targets as one float tensor [B, K + 1] (stored logits,
    then the hard label), so CutMix/MixUp mix the stored targets with the batch's ``lam``; the
    protocol's CE term (``ce_weight``) is taken here on the hard label of each mixed part."""

    name = "stored"
    needs_teacher = False

    def __init__(self, inner: nn.Module, ce_weight: float = 0.0):
        super().__init__()
        self.inner, self.ce_weight = inner, float(ce_weight)

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        self.inner.set_progress(epoch, total_epochs)

    def forward(self, student_logits, teacher_logits, targets):
        if targets is None or targets.dim() != 2:
            raise TinysetError("stored soft labels: the targets must be [batch, classes + 1] (logits, hard label)")
        z, y = targets[:, :-1].to(student_logits.dtype), targets[:, -1].long()
        loss = self.inner(student_logits, z, y)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(student_logits, y)
        return loss


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, device="cpu", batch_size: int = 500) -> torch.Tensor:
    """The frozen teacher's logits [N, K] on ``x`` (eval mode; restored afterwards), on CPU."""
    was = teacher.training
    teacher.eval()
    out = [teacher(xb.to(device)).float().cpu() for xb in x.split(batch_size)]
    teacher.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def stored_targets(teacher: nn.Module, x: torch.Tensor, soft_config: dict, device="cpu") -> torch.Tensor:
    """What the ``stored`` label mode would store for ``x``: the teacher's logits through the
    soft-label encoding of ``soft_config`` (k, bits), decoded (e.g. for a random subset beside a set
    that ships its soft labels)."""
    from ..quant.soft_labels import decode_soft_labels, encode_soft_labels

    t, c = encode_soft_labels(teacher_logits(teacher, x, device), soft_config.get("k"), int(soft_config.get("bits", 8)))
    return decode_soft_labels(t, c)


def train_student(
    images: torch.Tensor, labels: torch.Tensor, ds: Dataset, teacher: nn.Module | None, ecfg: EvalConfig,
    mode: str, seed: int, device, channels_last=True, amp=False, runlog: JsonlLog | None = None, progress=True,
    desc: str = "student", log_fields: dict | None = None, soft_labels: torch.Tensor | None = None,
) -> float:
    """One student from scratch on (images, labels); returns last-epoch test accuracy (percent).
    ``mode="stored"`` learns from ``soft_labels`` (stored logits [N, K]) instead of a teacher."""
    spec = eval_spec(ecfg, channels_last, amp)
    targets = labels
    if mode == "stored":
        if soft_labels is None or len(soft_labels) != len(labels):
            raise TinysetError("the stored label mode needs stored soft labels, one row per sample "
                               "(`tinyset compress RUN --labels stored`, or `jobs.compress.attach_soft_labels`)")
        loss = StoredLabelsLoss(kd_loss_for_eval(ecfg), spec.ce_weight)
        spec.ce_weight = 0.0  # taken inside the loss (the targets are not hard labels)
        targets = torch.cat([soft_labels.float(), labels.float().unsqueeze(1)], dim=1)
        teacher = None
    elif mode == "soft":
        if teacher is None:
            raise TinysetError("soft-label evaluation needs a teacher")
        loss = kd_loss_for_eval(ecfg)
    elif mode == "hard":
        loss = build_kd_loss("ce")
        teacher = None
    else:
        raise TinysetError(f"unknown label mode {mode!r}; choose from {', '.join(LABEL_MODES)}")
    torch.manual_seed(derive_seed(seed, "student-init"))
    student = get_model(ecfg.student, ds.info)
    res = train(
        student, TensorSplit(images, targets), spec, loss, teacher=teacher, test_split=ds.test, device=device,
        seed=derive_seed(seed, "student-train"), runlog=runlog, desc=desc, progress=progress, log_fields=log_fields,
    )
    return float(res.test_accuracy)


def synthesis_seed(seed: int, s: int) -> int:
    """The run seed that synthesises the set evaluated with eval seed ``s`` (paired seeds). Seed 0
    of the pair is the run's own seed, so the first pair evaluates the run's own artifact."""
    return int(seed) + s


def variance_note(resynthesised: bool) -> str:
    """What the std of a row holds, in words (eval.md says it under the table)."""
    if resynthesised:
        return ("std over paired seeds: each seed re-synthesises the set (run seed + s) and trains a fresh student, "
                "so it holds synthesis and training variance, like the random subset's (redrawn per seed)")
    return ("std over student seeds on one synthesised set: training variance only; the random subset is redrawn "
            "per seed, so its std also holds selection variance (set eval.synthesis_seeds=true to pair them)")


def evaluate_set(
    images: torch.Tensor, labels: torch.Tensor, ds: Dataset, teacher: nn.Module | None, ecfg: EvalConfig,
    device, seed: int = 0, channels_last=True, amp=False, runlog: JsonlLog | None = None, progress=True,
    resynthesize: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    soft_labels: torch.Tensor | None = None, soft_config: dict | None = None,
) -> dict:
    """Evaluate a distilled set (and the random baseline) under every configured label mode.

    ``resynthesize(run_seed)``, when given, makes the set for eval seeds s >= 1 with run seed
    ``synthesis_seed(seed, s)`` (s = 0 uses ``images``), so the row's std holds synthesis variance.

    The ``stored`` mode trains on ``soft_labels`` (the artifact's stored logits, encoded as
    ``soft_config`` says); its random subset (and any re-synthesised set) gets the teacher's logits
    through the same encoding, so it needs ``teacher``; without one the stored mode's random row
    is left out."""
    if ds.test is None:
        raise TinysetError(f"dataset {ds.info.name} has no test split to evaluate on")
    if "stored" in ecfg.label_modes and (soft_labels is None or soft_config is None):
        raise TinysetError("label mode 'stored' needs stored soft labels; this set has none "
                           "(add them with `tinyset compress RUN --labels stored`)")
    sets_cache = {0: (images, labels)}

    def set_for(s: int):
        # synthesis seeds: re-synthesise per eval seed (by index, so every rank makes the same set)
        if resynthesize is None:
            return images, labels
        if s not in sets_cache:
            sets_cache[s] = resynthesize(synthesis_seed(seed, s))
        return sets_cache[s]

    # Every student is seeded by (seed, label mode, seed index, set), never by the order it trains
    # in, so under torchrun the students are dealt to ranks and the result is the same.
    sets = ("distilled", "random") if ecfg.random_baseline else ("distilled",)

    def sets_of(mode: str) -> tuple[str, ...]:
        if mode == "stored" and teacher is None:  # nothing to label a random subset with
            return ("distilled",)
        return sets

    if "stored" in ecfg.label_modes and resynthesize is not None and teacher is None:
        raise TinysetError("re-synthesised sets under the stored label mode need the teacher to label them")
    jobs = [(mode, s, which) for mode in ecfg.label_modes for s in range(ecfg.seeds) for which in sets_of(mode)]
    mine = {}
    my_jobs = dist.shard(jobs)
    for k, (mode, s, which) in enumerate(my_jobs, 1):
        # the overall counter: "student k of N" (of this rank's share under torchrun)
        log.info("evaluation: student %d of %d (%s %s seed %d)", k, len(my_jobs), which, mode, s)
        sseed = derive_seed(seed, "eval", s)
        if which == "distilled":
            x, y = set_for(s)
        else:
            x, y = random_subset(ds, labels, derive_seed(seed, "random-subset", s))
        z = None
        if mode == "stored":
            z = soft_labels if (which == "distilled" and (resynthesize is None or s == 0)) else \
                stored_targets(teacher, x, soft_config, device)
        mine[(mode, s, which)] = train_student(x, y, ds, teacher, ecfg, mode, sseed, device, channels_last, amp,
                                               runlog, progress, desc=f"student {k}/{len(my_jobs)}: {which} {mode} seed {s}",
                                               log_fields={"stage": "eval", "set": which, "label_mode": mode, "seed": s},
                                               soft_labels=z)
    accs = {k: v for part in dist.all_gather_objects(mine) for k, v in part.items()}
    rows = [EvalRow(mode, which, [accs[(mode, s, which)] for s in range(ecfg.seeds)])
            for mode in ecfg.label_modes for which in sets_of(mode)]
    report = {"rows": [r.as_dict() for r in rows], "protocol": describe_protocol(ecfg),
              "protocol_overrides": protocol_overrides(ecfg),
              "config": {k: getattr(ecfg, k) for k in ecfg.__dataclass_fields__},
              "synthesis_seeds": [synthesis_seed(seed, s) for s in range(ecfg.seeds)] if resynthesize else [seed],
              "variance": variance_note(resynthesize is not None)}
    for mode in ecfg.label_modes:
        d = next(r for r in rows if r.label_mode == mode and r.set == "distilled")
        b = next((r for r in rows if r.label_mode == mode and r.set == "random"), None)
        if b is not None:
            report.setdefault("improvement_over_random", {})[mode] = d.mean - b.mean
    return report


def markdown_table(report: dict, title: str = "") -> str:
    if report.get("protocol") and "protocol" not in title:
        title = f"{title} — protocol {report['protocol']}" if title else f"protocol {report['protocol']}"
    lines = [f"### {title}", ""] if title else []
    lines += ["| label mode | set | seeds | accuracy (%) | vs random |", "|---|---|---|---|---|"]
    imp = report.get("improvement_over_random", {})
    for r in report["rows"]:
        delta = f"{imp[r['label_mode']]:+.2f}" if r["set"] == "distilled" and r["label_mode"] in imp else ""
        # one seed has no spread: say n=1 rather than print a misleading "± 0.00"
        acc = f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f}" if r["seeds"] > 1 else f"{r['accuracy_mean']:.2f} (n=1)"
        lines.append(f"| {r['label_mode']} | {r['set']} | {r['seeds']} | {acc} | {delta} |")
    b = report.get("bytes")
    if b:
        per = ", ".join(f"{m} {n}" for m, n in b.get("student_bytes", {}).items())
        lines += ["", f"Bytes: set_bytes {b['set_bytes']}" + (f"; student_bytes (set + what the label mode needs: "
                                                               f"soft = the online teacher) {per}" if per else "") + "."]
    if report.get("variance"):
        lines += ["", f"Variance: {report['variance']}."]
    return "\n".join(lines) + "\n"
