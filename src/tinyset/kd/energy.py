"""Energy KD: a per-sample distillation temperature chosen by the teacher's energy.

Energy is ``E(z) = -T_e * logsumexp(z / T_e)`` of the teacher logits (low = confident). The
released code computes ``log(sum(exp(z / 4)))``, which overflows for logits above ~355; here it is
always ``logsumexp``. Thresholds come from one pass over the (augmented) training set before
training (``collect_energies`` + ``energy_thresholds``), fixed for the run, not per batch.

Direction conflict: the paper's text gives the *higher* temperature to low-energy samples (to
soften confident targets), while the authors' released code gives low-energy samples the *lower*
temperature (2) and high-energy ones the higher (6); mid is 4 in both. Both are available
(``energy_kd_paper`` / ``energy_kd_reverse``); ``energy_kd`` uses ``DEFAULT_ENERGY_DIRECTION``
until a benchmark settles it."""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TinysetError
from .losses import DKD, KDLoss, kd_divergence, register_kd_loss

#: Which Energy KD variant ``energy_kd`` / ``energy_dkd`` use: "reverse" (released code) or "paper".
DEFAULT_ENERGY_DIRECTION = "reverse"

#: (low-energy group, mid group, high-energy group) temperatures for each direction.
ENERGY_TEMPERATURES: dict[str, tuple[float, float, float]] = {
    "reverse": (2.0, 4.0, 6.0),
    "paper": (6.0, 4.0, 2.0),
}

LOW, MID, HIGH = 0, 1, 2


def energy(logits: Tensor, T: float = 4.0) -> Tensor:
    """Per-sample energy ``-T * logsumexp(logits / T)``: finite for any finite logits, and
    ``energy(z + c) == energy(z) - c``."""
    return -T * torch.logsumexp(logits / T, dim=1)


def frac_count(frac: float, n: int) -> int:
    """How many of ``n`` samples a fraction means: ``frac * n`` rounded half up."""
    if not 0.0 <= frac <= 1.0:
        raise TinysetError(f"a fraction must be in [0, 1], got {frac}")
    return min(n, int(math.floor(frac * n + 0.5)))


#: The threshold rule ``energy_thresholds`` uses by default (the trainer calls it without a rule).
DEFAULT_THRESHOLD_RULE = "tinyset"
THRESHOLD_RULES = ("tinyset", "reference")


def energy_thresholds(
    energies: Tensor, low_frac: float = 0.2, high_frac: float = 0.2, rule: str | None = None
) -> tuple[float, float]:
    """(low, high) thresholds for ``energy_groups`` (``E <= low`` is low, ``E >= high`` is high).

    ``rule="tinyset"`` (default): ``E <= low`` holds for the ``round(low_frac * n)`` lowest
    energies and ``E >= high`` for the ``round(high_frac * n)`` highest: order statistics of the
    float64-sorted energies, so with distinct values the groups have exactly those sizes (ties at a
    threshold join its group). A zero fraction gives -inf / +inf (empty group).

    ``rule="reference"``: the released Energy KD code's ``s[int(n * r)]`` and ``s[n - 1 - int(n * r)]``
    with strict ``<`` / ``>`` (so int(n * r) samples, truncated, minus ties); returned as the next
    float32 below / above those values, so the inclusive ``energy_groups`` reproduces the strict rule."""
    rule = DEFAULT_THRESHOLD_RULE if rule is None else rule
    if rule not in THRESHOLD_RULES:
        raise TinysetError(f"unknown energy threshold rule {rule!r}; choose {' or '.join(THRESHOLD_RULES)}")
    e = energies.detach().reshape(-1).to(torch.float64).cpu()
    n = e.numel()
    if n == 0:
        raise TinysetError("energy_thresholds got no energies")
    if rule == "reference":
        for f in (low_frac, high_frac):
            if not 0.0 <= f < 1.0:
                raise TinysetError(f"a fraction must be in [0, 1) for the reference rule, got {f}")
        s32 = torch.sort(energies.detach().reshape(-1).float().cpu()).values
        lo, hi = s32[int(n * low_frac)], s32[n - 1 - int(n * high_frac)]
        return (float(torch.nextafter(lo, torch.tensor(-math.inf))), float(torch.nextafter(hi, torch.tensor(math.inf))))
    k_low, k_high = frac_count(low_frac, n), frac_count(high_frac, n)
    if k_low + k_high > n:
        raise TinysetError(f"low_frac + high_frac must be at most 1, got {low_frac} + {high_frac}")
    s = torch.sort(e).values
    low = float(s[k_low - 1]) if k_low > 0 else -math.inf
    high = float(s[n - k_high]) if k_high > 0 else math.inf
    return low, high


def energy_groups(energies: Tensor, low: float, high: float) -> Tensor:
    """0 (low) where ``E <= low``, 2 (high) where ``E >= high``, else 1 (mid); low wins a tie."""
    groups = torch.full(energies.shape, MID, dtype=torch.long, device=energies.device)
    groups[energies >= high] = HIGH
    groups[energies <= low] = LOW
    return groups


@torch.no_grad()
def collect_energies(
    teacher: nn.Module, batches: Iterable[Tensor | tuple | list], device: torch.device | str, T: float = 4.0
) -> Tensor:
    """Energies of the frozen teacher over already-augmented batches (images, or tuples whose
    first item is the images), on the CPU in float32. The teacher runs in eval mode under no_grad;
    its previous train/eval mode is restored afterwards."""
    was_training = teacher.training
    teacher.eval()
    out: list[Tensor] = []
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            out.append(energy(teacher(images.to(device)).float(), T).cpu())
    finally:
        teacher.train(was_training)
    if not out:
        raise TinysetError("collect_energies got no batches")
    return torch.cat(out)


class EnergyTemperature:
    """Maps teacher logits to one temperature per sample by energy group."""

    def __init__(
        self,
        direction: str | None = None,
        temperatures: tuple[float, float, float] | None = None,
        energy_temperature: float = 4.0,
        thresholds: tuple[float, float] | None = None,
    ):
        direction = DEFAULT_ENERGY_DIRECTION if direction is None else direction
        if direction not in ENERGY_TEMPERATURES:
            known = ", ".join(sorted(ENERGY_TEMPERATURES))
            raise TinysetError(f"unknown energy direction {direction!r}; known: {known}")
        temps = ENERGY_TEMPERATURES[direction] if temperatures is None else tuple(float(t) for t in temperatures)
        if len(temps) != 3 or min(temps) <= 0:
            raise TinysetError(f"temperatures must be three positive numbers (low, mid, high), got {temperatures}")
        self.direction, self.temperatures, self.energy_temperature = direction, temps, float(energy_temperature)
        self.thresholds: tuple[float, float] | None = None
        if thresholds is not None:
            self.set_thresholds(*thresholds)

    def set_thresholds(self, low: float, high: float) -> None:
        if not low <= high:
            raise TinysetError(f"energy thresholds must satisfy low <= high, got {low} > {high}")
        self.thresholds = (float(low), float(high))

    def __call__(self, teacher_logits: Tensor, owner: str) -> Tensor:
        if self.thresholds is None:
            raise TinysetError(f"{owner} needs energy thresholds: call set_energy_thresholds(low, high) first")
        groups = energy_groups(energy(teacher_logits.detach(), self.energy_temperature), *self.thresholds)
        table = torch.tensor(self.temperatures, dtype=teacher_logits.dtype, device=teacher_logits.device)
        return table[groups]


class EnergyKD(KDLoss):
    """``ce_weight * CE + kd_weight * mean_i T_i^2 KL(softmax(t_i/T_i) || softmax(s_i/T_i))`` with
    ``T_i`` from the teacher's energy group (see the module docstring for the direction)."""

    name = "energy_kd"
    needs_energy_thresholds = True

    def __init__(
        self,
        direction: str | None = None,
        temperatures: tuple[float, float, float] | None = None,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        energy_temperature: float = 4.0,
        thresholds: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.grouping = EnergyTemperature(direction, temperatures, energy_temperature, thresholds)
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)

    def set_energy_thresholds(self, low: float, high: float) -> None:
        self.grouping.set_thresholds(low, high)

    def sample_temperatures(self, teacher_logits: Tensor) -> Tensor:
        return self.grouping(teacher_logits, self.name)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None) -> Tensor:
        s, t, y = self._inputs(student_logits, teacher_logits, targets)
        loss = self.kd_weight * kd_divergence(s, t, self.sample_temperatures(t)).mean()
        if y is not None and self.ce_weight > 0:
            loss = loss + self.ce_weight * F.cross_entropy(s, y)
        return loss


class EnergyDKD(DKD):
    """DKD whose temperature is chosen per sample by the teacher's energy group."""

    name = "energy_dkd"
    needs_energy_thresholds = True

    def __init__(
        self,
        direction: str | None = None,
        temperatures: tuple[float, float, float] | None = None,
        alpha: float = 1.0,
        beta: float = 8.0,
        ce_weight: float = 1.0,
        warmup: int = 20,
        energy_temperature: float = 4.0,
        thresholds: tuple[float, float] | None = None,
    ):
        super().__init__(alpha=alpha, beta=beta, ce_weight=ce_weight, warmup=warmup)
        self.grouping = EnergyTemperature(direction, temperatures, energy_temperature, thresholds)

    def set_energy_thresholds(self, low: float, high: float) -> None:
        self.grouping.set_thresholds(low, high)

    def sample_temperatures(self, teacher_logits: Tensor) -> Tensor:
        return self.grouping(teacher_logits, self.name)


register_kd_loss("energy_kd", "Energy KD: per-sample temperature by teacher energy (default direction)")(EnergyKD)
register_kd_loss("energy_dkd", "DKD with a per-sample temperature by teacher energy")(EnergyDKD)


def _fixed_direction(direction: str) -> type[EnergyKD]:
    class _Fixed(EnergyKD):
        name = f"energy_kd_{direction}"

        def __init__(
            self,
            temperatures: tuple[float, float, float] | None = None,
            ce_weight: float = 0.1,
            kd_weight: float = 0.9,
            energy_temperature: float = 4.0,
            thresholds: tuple[float, float] | None = None,
        ):
            super().__init__(direction, temperatures, ce_weight, kd_weight, energy_temperature, thresholds)

    _Fixed.__name__ = _Fixed.__qualname__ = f"EnergyKD{direction.capitalize()}"
    return _Fixed


EnergyKDPaper = register_kd_loss(
    "energy_kd_paper", "Energy KD as the paper's text: low energy -> T=6, high energy -> T=2"
)(_fixed_direction("paper"))
EnergyKDReverse = register_kd_loss(
    "energy_kd_reverse", "Energy KD as the released code: low energy -> T=2, high energy -> T=6"
)(_fixed_direction("reverse"))
