"""High-energy data augmentation (HE-DA): extra KD on CutMix/MixUp of the uncertain samples.

Samples the teacher is least sure of (high energy) are mixed among themselves, and the student is
distilled on the mixed sub-batch. The released configs mix the top 50% energies with CutMix
(lambda ~ Beta(1, 1); MixUp uses Beta(0.2, 0.2)) and add ``0.9 * KD at T=4`` with no label loss;
that is the default here (``alpha=None`` picks the mode's reference alpha).
(The released training script itself stops at a leftover debugger call, so those configs, not a
run, are the reference.) Works for any image size: the CutMix box comes from the batch's H, W."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..data.augment import cutmix, mixup
from ..errors import TinysetError
from .energy import energy, frac_count
from .losses import kd_divergence

_MIXERS = {"cutmix": cutmix, "mixup": mixup}
#: Beta(alpha, alpha) per mode when ``alpha`` is None: the reference's CutMix Beta(1, 1), MixUp Beta(0.2, 0.2).
DEFAULT_ALPHA = {"cutmix": 1.0, "mixup": 0.2}


def select_high_energy(
    teacher_logits: Tensor, frac: float | None = 0.5, threshold: float | None = None, T_e: float = 4.0
) -> Tensor:
    """Indices (ascending) of samples with teacher energy at or above a cut.

    With ``threshold`` the cut is that absolute energy. Otherwise it is the per-batch (1 - frac)
    quantile taken as an order statistic: the ``round(frac * n)``-th highest energy, so exactly
    that many samples are selected when energies are distinct (ties at the cut are included)."""
    e = energy(teacher_logits.detach().float(), T_e)
    if threshold is not None:
        cut = float(threshold)
    else:
        if frac is None:
            raise TinysetError("high-energy selection needs frac or threshold")
        k = frac_count(frac, e.numel())
        if k == 0:
            return torch.zeros(0, dtype=torch.long, device=e.device)
        cut = float(torch.sort(e.double(), descending=True).values[k - 1])
    return torch.nonzero(e >= cut).reshape(-1)


def high_energy_mix(
    images: Tensor,
    teacher_logits: Tensor,
    frac: float | None = 0.5,
    *,
    threshold: float | None = None,
    mode: str = "cutmix",
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    T_e: float = 4.0,
    select: str = "energy",
) -> tuple[Tensor, Tensor]:
    """Mix only the high-energy sub-batch, partners drawn from within it.

    ``select="random"`` picks the same number of samples at random instead (the control that
    separates "which samples" from "how many"); ``frac=1`` mixes the whole batch.

    Returns ``(mixed, index)``: ``mixed`` has one row per selected sample (``images[index]``
    mixed), ``index`` the selected rows of ``images`` (ascending). ``images`` is not modified.
    A sub-batch of one is returned unmixed (it has no partner); an empty one as an empty tensor."""
    if mode not in _MIXERS:
        raise TinysetError(f"unknown HE-DA mode {mode!r}; known: {', '.join(sorted(_MIXERS))}")
    if images.shape[0] != teacher_logits.shape[0]:
        raise TinysetError(f"HE-DA got {images.shape[0]} images but {teacher_logits.shape[0]} teacher logits")
    if select == "energy":
        index = select_high_energy(teacher_logits, frac, threshold, T_e).to(images.device)
    elif select == "random":
        k = frac_count(frac if frac is not None else 0.5, images.shape[0])
        index = torch.randperm(images.shape[0], generator=generator)[:k].sort().values.to(images.device)
    else:
        raise TinysetError(f"unknown HE-DA selection {select!r}; choose energy or random")
    sub = images[index]
    if sub.shape[0] < 2:
        return sub, index
    alpha = DEFAULT_ALPHA[mode] if alpha is None else float(alpha)
    mixed, _, _ = _MIXERS[mode](sub, alpha, generator)
    return mixed, index


def he_da_loss(
    student: nn.Module,
    teacher: nn.Module,
    images: Tensor,
    teacher_logits: Tensor,
    kd_loss_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None = None,
    frac: float | None = 0.5,
    weight: float = 0.9,
    T: float = 4.0,
    mode: str = "cutmix",
    generator: torch.Generator | None = None,
    *,
    alpha: float | None = None,
    threshold: float | None = None,
    T_e: float = 4.0,
    select: str = "energy",
) -> Tensor:
    """``weight * KD`` on the mixed high-energy sub-batch, for the trainer to add to its loss.

    ``teacher_logits`` (of ``images``, already computed by the trainer) only pick the samples; the
    teacher is re-run on the mixed images under no_grad, the student with grad. KD is
    ``kd_loss_fn(s, t, None)`` when given, else plain ``T^2 KL`` at ``T`` (no label term)."""
    mixed, index = high_energy_mix(
        images, teacher_logits, frac, threshold=threshold, mode=mode, alpha=alpha, generator=generator, T_e=T_e,
        select=select,
    )
    if index.numel() == 0:
        return images.new_zeros(())
    with torch.no_grad():
        t = teacher(mixed)
    s = student(mixed)
    if kd_loss_fn is not None:
        kd = kd_loss_fn(s, t, None)
    else:
        kd = kd_divergence(s.float(), t.detach().float(), T).mean()
    return weight * kd
