"""Knowledge-distillation losses for training students on distilled data.

Importing this package registers every loss (``ce``, ``kd``, ``mse_ce``, ``dkd``, ``energy_kd``,
``energy_kd_paper``, ``energy_kd_reverse``, ``energy_dkd``) in ``KD_LOSSES``."""
from .energy import (
    DEFAULT_ENERGY_DIRECTION,
    ENERGY_TEMPERATURES,
    EnergyDKD,
    EnergyKD,
    collect_energies,
    energy,
    energy_groups,
    energy_thresholds,
)
from .he_da import he_da_loss, high_energy_mix, select_high_energy
from .losses import (
    DKD,
    KD_LOSSES,
    CELoss,
    HintonKD,
    KDLoss,
    MSECE,
    build_kd_loss,
    dkd_terms,
    kd_divergence,
    register_kd_loss,
)

__all__ = [
    "CELoss",
    "DEFAULT_ENERGY_DIRECTION",
    "DKD",
    "ENERGY_TEMPERATURES",
    "EnergyDKD",
    "EnergyKD",
    "HintonKD",
    "KDLoss",
    "KD_LOSSES",
    "MSECE",
    "build_kd_loss",
    "collect_energies",
    "dkd_terms",
    "energy",
    "energy_groups",
    "energy_thresholds",
    "he_da_loss",
    "high_energy_mix",
    "kd_divergence",
    "register_kd_loss",
    "select_high_energy",
]
