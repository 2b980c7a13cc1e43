"""Logit distillation losses behind one interface, looked up by name (``build_kd_loss("dkd")``).

Every loss works in log space (``log_softmax`` / ``logsumexp``) and in float32 or wider, so it
stays finite for logits of magnitude 1e4: released code for DKD (mdistiller) takes the log of a
softmax probability that underflows to 0 there and returns NaN. Teacher logits are detached: the
teacher is frozen, and a stray graph through it would only cost memory."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TinysetError
from ..registry import Registry

KDLossFactory = Callable[..., "KDLoss"]
KD_LOSSES: Registry[KDLossFactory] = Registry("kd loss")


def register_kd_loss(name: str, doc: str | None = None) -> Callable[[KDLossFactory], KDLossFactory]:
    """Decorator: ``@register_kd_loss("kd", "Hinton KD")`` on a KDLoss class or factory."""
    return KD_LOSSES.register(name, doc)


def build_kd_loss(name: str, **kwargs: Any) -> "KDLoss":
    """Build a registered loss; unknown names and unknown keyword arguments are one-line errors."""
    factory = KD_LOSSES.get(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise TinysetError(f"kd loss {name!r}: {exc}") from None
    return factory(**kwargs)


class KDLoss(nn.Module):
    """``forward(student_logits, teacher_logits, targets) -> scalar``.

    ``targets`` are hard labels or None; ``teacher_logits`` may be None only when
    ``needs_teacher`` is False. The flags tell the trainer what to compute before calling."""

    name: str = "kd loss"
    needs_teacher: bool = True
    needs_targets: bool = False
    needs_energy_thresholds: bool = False

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        """Called once per epoch (``epoch`` counts from 0); losses with schedules override it."""

    def set_energy_thresholds(self, low: float, high: float) -> None:
        """Energy-grouped losses override this; the others ignore it."""

    def _inputs(
        self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Validate, upcast half precision to float32 and detach the teacher."""
        if student_logits.dim() != 2:
            shape = tuple(student_logits.shape)
            raise TinysetError(f"{self.name}: student logits must be (batch, classes), got {shape}")
        s = student_logits.float() if student_logits.dtype in (torch.float16, torch.bfloat16) else student_logits
        t = None
        if teacher_logits is not None:
            if teacher_logits.shape != student_logits.shape:
                raise TinysetError(
                    f"{self.name}: teacher logits {tuple(teacher_logits.shape)} do not match student "
                    f"logits {tuple(student_logits.shape)}"
                )
            t = teacher_logits.detach().to(s.dtype)
        elif self.needs_teacher:
            raise TinysetError(f"{self.name} needs teacher logits, got None")
        if targets is None and self.needs_targets:
            raise TinysetError(f"{self.name} needs hard-label targets, got None")
        if targets is not None:
            targets = targets.long()
        return s, t, targets


def temperature_column(T: float | Tensor, like: Tensor) -> Tensor:
    """A temperature as a (N, 1) or (1, 1) column that broadcasts over classes."""
    if isinstance(T, Tensor):
        return T.to(like.device, like.dtype).reshape(-1, 1)
    return like.new_full((1, 1), float(T))


def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, T: float | Tensor) -> Tensor:
    """Per-sample ``T^2 * KL(softmax(t/T) || softmax(s/T))``; ``T`` is a float or one per sample.

    The mean over the batch equals ``F.kl_div(..., reduction='batchmean') * T^2`` (Hinton KD)."""
    tc = temperature_column(T, student_logits)
    log_p_s = F.log_softmax(student_logits / tc, dim=1)
    log_p_t = F.log_softmax(teacher_logits / tc, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(1)
    return kl * tc.reshape(-1) ** 2


def _log_rest(log_gt: Tensor, log_p_rest: Tensor) -> Tensor:
    """log(1 - p(target)), accurate in float32 at both ends. When the target is unlikely (log p <
    -log 2) from the target's log-probability with log1p (summing the non-target probabilities
    with logsumexp lands near 0 and lost ~1e-4 relative at T=4-8); when the target is likely, the
    non-target log-probabilities are small and exact, so their logsumexp is the accurate one."""
    lse = torch.logsumexp(log_p_rest, dim=1, keepdim=True)
    unlikely = log_gt < -0.6931471805599453
    return torch.where(unlikely, torch.log1p(-torch.exp(log_gt.clamp_max(-0.6931471805599453))), lse)


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, T: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Per-sample (TCKD, NCKD) of Decoupled KD (Zhao et al. 2022), each already times ``T^2``.

    TCKD is the KL over the binary (target, rest) split; NCKD the KL over the non-target classes
    alone. Both are built from log-probabilities: log p(rest) = log(1 - p(target)) (``_log_rest``), and the non-target distribution drops the target column instead of
    subtracting 1000 from it, so nothing underflows to log(0)."""
    n, c = student_logits.shape
    if c < 2:
        raise TinysetError(f"DKD needs at least 2 classes, got {c}")
    tc = temperature_column(T, student_logits)
    rest = torch.ones(n, c, dtype=torch.bool, device=student_logits.device)
    rest[torch.arange(n, device=rest.device), targets] = False

    def split(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits / tc
        log_p = F.log_softmax(z, dim=1)
        log_gt = log_p.gather(1, targets.view(n, 1))
        log_rest = _log_rest(log_gt, log_p[rest].view(n, c - 1))
        return torch.cat([log_gt, log_rest], dim=1), F.log_softmax(z[rest].view(n, c - 1), dim=1)

    bin_s, non_s = split(student_logits)
    bin_t, non_t = split(teacher_logits)
    t2 = tc.reshape(-1) ** 2
    tckd = F.kl_div(bin_s, bin_t, log_target=True, reduction="none").sum(1) * t2
    nckd = F.kl_div(non_s, non_t, log_target=True, reduction="none").sum(1) * t2
    return tckd, nckd


@register_kd_loss("ce", "cross-entropy with hard labels only (no teacher)")
class CELoss(KDLoss):
    name = "ce"
    needs_teacher = False
    needs_targets = True

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None) -> Tensor:
        s, _, y = self._inputs(student_logits, teacher_logits, targets)
        return F.cross_entropy(s, y)


@register_kd_loss("kd", "Hinton KD: T^2 KL(teacher || student) at temperature T, optional CE term")
class HintonKD(KDLoss):
    name = "kd"

    def __init__(self, temperature: float = 4.0, kd_weight: float = 1.0, ce_weight: float = 0.0):
        super().__init__()
        self.temperature, self.kd_weight, self.ce_weight = float(temperature), float(kd_weight), float(ce_weight)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None) -> Tensor:
        s, t, y = self._inputs(student_logits, teacher_logits, targets)
        loss = self.kd_weight * kd_divergence(s, t, self.temperature).mean()
        if y is not None and self.ce_weight > 0:
            loss = loss + self.ce_weight * F.cross_entropy(s, y)
        return loss


@register_kd_loss("mse_ce", "EDC/E2D evaluation loss: MSE(student, teacher logits) + 0.025 CE")
class MSECE(KDLoss):
    """EDC's ``mse_gt``: ``F.mse_loss(s, t) + ce_weight * F.cross_entropy(s, y)`` on raw logits
    (no temperature); its released scripts pass ``--ce-weight 0.025``."""

    name = "mse_ce"

    def __init__(self, ce_weight: float = 0.025):
        super().__init__()
        self.ce_weight = float(ce_weight)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None) -> Tensor:
        s, t, y = self._inputs(student_logits, teacher_logits, targets)
        loss = F.mse_loss(s, t)
        if y is not None and self.ce_weight > 0:
            loss = loss + self.ce_weight * F.cross_entropy(s, y)
        return loss


@register_kd_loss("mse", "MSE between student and teacher logits (no temperature); E2D's protocol adds CE via eval.ce_weight")
class MSELogits(KDLoss):
    name = "mse"

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None) -> Tensor:
        s, t, _ = self._inputs(student_logits, teacher_logits, targets)
        return F.mse_loss(s, t)


@register_kd_loss("dkd", "Decoupled KD: TCKD + 8 NCKD at T=4, warmed up over 20 epochs, + CE")
class DKD(KDLoss):
    """``ce_weight * CE + min((epoch + 1) / warmup, 1) * (alpha * TCKD + beta * NCKD)``.

    ``set_progress`` takes 0-based epochs, so ``(epoch + 1) / warmup`` equals mdistiller's
    ``epoch / warmup`` with its 1-based epochs. Before any ``set_progress`` call the KD part has
    full weight; ``warmup=0`` disables the warm-up."""

    name = "dkd"
    needs_targets = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        warmup: int = 20,
    ):
        super().__init__()
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.ce_weight, self.warmup = float(ce_weight), int(warmup)
        self.kd_scale = 1.0

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        self.kd_scale = min((epoch + 1) / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def sample_temperatures(self, teacher_logits: Tensor) -> float | Tensor:
        """One temperature for all samples; Energy DKD returns one per sample."""
        return self.temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None) -> Tensor:
        s, t, y = self._inputs(student_logits, teacher_logits, targets)
        tckd, nckd = dkd_terms(s, t, y, self.sample_temperatures(t))
        kd = (self.alpha * tckd + self.beta * nckd).mean()
        return self.ce_weight * F.cross_entropy(s, y) + self.kd_scale * kd
