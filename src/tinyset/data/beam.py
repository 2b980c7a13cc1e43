"""``beam``: a seeded generator of spatial-domain beam-prediction data, in the spirit of the 3GPP
Rel-18 AI/ML beam-management studies (BM-Case1: predict the best beam of a large set A from
measurements of a small set B).

Model (every parameter is a field of ``BeamConfig`` and is documented in the README):

* Base station: a uniform linear array of ``n_tx`` antennas at half-wavelength spacing; steering
  vector ``a(u)_n = exp(j pi n u)`` with ``u = sin(theta)``.
* Set A: ``n_beams_a`` narrow DFT-style beams ``w_k = a(u_k) / sqrt(n_tx)`` whose directions
  ``u_k`` are evenly spread over the sector ``|theta| <= sector_deg``.
* Set B: ``n_beams_b`` measured beams: ``wide`` = beams of a ``n_tx / wide_factor``-antenna
  sub-array (wider main lobes) evenly spread over the sector, or ``sparse`` = every
  ``n_beams_a / n_beams_b``-th Set-A beam.
* Users: dropped uniformly in angle within the sector and in distance in ``[d_min_m, d_max_m]``.
  Channel ``h = sqrt(K/(K+1)) e^{j phi} a(u_los) + sqrt(1/((K+1) L)) sum_l g_l a(u_l)``: a
  line-of-sight path plus ``n_scatter`` (L) paths at angles ``theta_los + N(0, angle_spread_deg)``
  with ``g_l ~ CN(0, 1)``; Rician K-factor uniform in ``k_factor_db`` (dB).
* Received power of beam ``w``: ``P_tx - PL(d) + 10 log10 |w^H h|^2`` with path loss
  ``PL = pl_intercept_db + pl_slope_db * log10(d)`` (dB), plus thermal noise
  ``noise_dbm`` added in linear power, then a log-normal measurement error ``meas_std_db``.
* Input: L1-RSRP in dBm of the Set-B beams (a vector of ``n_beams_b``). Label: index of the Set-A
  beam with the largest noise-free gain ``|w_k^H h|^2``. ``top-k`` accuracy counts the label among
  the model's k best.
* ``report="3gpp"``: the inputs as a UE reports them, on 3GPP's L1-RSRP reporting grid (TS 38.133
  Table 10.1.6.1-1: 7-bit reported values, 1 dB steps, RSRP_r covering [r - 157, r - 156) dBm, the
  L1 range -140 to -44 dBm with values outside it reported at its ends, RSRP_16 and RSRP_113),
  decoded to each step's midpoint ``r - 156.5``. ``rsrp_report`` / ``rsrp_from_report`` convert.

Train and test splits are drawn from one generator seeded with ``seed`` (train first), so a seed
always gives identical data. ``beam:key=value,...`` overrides any field."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from ..config import DataConfig
from ..errors import TinysetError
from .base import Dataset, DatasetInfo, TensorSplit, channel_stats
from .registry import register_dataset


@dataclass(frozen=True)
class BeamConfig:
    n_tx: int = 32  # antennas of the base station's uniform linear array
    n_beams_a: int = 32  # Set A: narrow beams to choose from (the label space)
    n_beams_b: int = 8  # Set B: measured beams (the input features)
    set_b: str = "wide"  # wide (sub-array beams) | sparse (every n_a/n_b-th Set-A beam)
    wide_factor: int = 4  # wide beams use n_tx / wide_factor antennas
    sector_deg: float = 60.0  # users and beams cover [-sector, +sector] degrees
    n_scatter: int = 4  # scattered (non-line-of-sight) paths per user
    angle_spread_deg: float = 10.0  # std of scatterer angles around the line of sight
    k_factor_db: tuple[float, float] = (0.0, 9.0)  # Rician K-factor range, uniform in dB
    d_min_m: float = 10.0
    d_max_m: float = 200.0
    tx_power_dbm: float = 30.0
    pl_intercept_db: float = 61.4  # path loss PL = intercept + slope * log10(d / 1 m): 28 GHz-like
    pl_slope_db: float = 20.0
    noise_dbm: float = -90.0  # thermal noise per measurement (linear power added)
    meas_std_db: float = 1.0  # log-normal measurement error of the reported RSRP
    n_train: int = 20000
    n_test: int = 5000
    seed: int = 0
    report: str = "float"  # float (dBm as measured) | 3gpp (the L1-RSRP reporting grid: 7 bits, 1 dB)

    def check(self) -> "BeamConfig":
        if self.report not in ("float", "3gpp"):
            raise TinysetError(f"beam report must be float or 3gpp, not {self.report!r}")
        if self.set_b not in ("wide", "sparse"):
            raise TinysetError(f"beam set_b must be wide or sparse, not {self.set_b!r}")
        if self.set_b == "sparse" and self.n_beams_a % self.n_beams_b:
            raise TinysetError("beam set_b=sparse needs n_beams_a divisible by n_beams_b")
        if self.n_tx % self.wide_factor:
            raise TinysetError("beam n_tx must be divisible by wide_factor")
        if min(self.n_tx, self.n_beams_a, self.n_beams_b, self.n_train, self.n_test) < 1 or not 0 < self.sector_deg <= 90:
            raise TinysetError("beam sizes must be positive and sector_deg in (0, 90]")
        return self


def _steer(u: torch.Tensor, n: int) -> torch.Tensor:
    """Steering vectors [len(u), n] (complex128) for directions u = sin(theta)."""
    idx = torch.arange(n, dtype=torch.float64)
    return torch.exp(1j * math.pi * u.to(torch.float64).unsqueeze(-1) * idx)


def codebooks(cfg: BeamConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(Set A [n_a, n_tx], Set B [n_b, n_tx]) unit-norm beamformers."""
    umax = math.sin(math.radians(cfg.sector_deg))
    ua = umax * (2 * torch.arange(cfg.n_beams_a, dtype=torch.float64) + 1 - cfg.n_beams_a) / cfg.n_beams_a
    set_a = _steer(ua, cfg.n_tx) / math.sqrt(cfg.n_tx)
    if cfg.set_b == "sparse":
        step = cfg.n_beams_a // cfg.n_beams_b
        return set_a, set_a[step // 2 :: step]
    m = cfg.n_tx // cfg.wide_factor
    ub = umax * (2 * torch.arange(cfg.n_beams_b, dtype=torch.float64) + 1 - cfg.n_beams_b) / cfg.n_beams_b
    set_b = torch.zeros(cfg.n_beams_b, cfg.n_tx, dtype=torch.complex128)
    set_b[:, :m] = _steer(ub, m) / math.sqrt(m)
    return set_a, set_b


def generate(cfg: BeamConfig, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` users: (L1-RSRP of Set B in dBm, float32 [n, n_b]; best Set-A beam, int64 [n])."""
    set_a, set_b = codebooks(cfg)
    rad = math.radians(cfg.sector_deg)
    f64 = dict(dtype=torch.float64)
    theta = (torch.rand(n, generator=g, **f64) * 2 - 1) * rad
    d = cfg.d_min_m + torch.rand(n, generator=g, **f64) * (cfg.d_max_m - cfg.d_min_m)
    k_db = cfg.k_factor_db[0] + torch.rand(n, generator=g, **f64) * (cfg.k_factor_db[1] - cfg.k_factor_db[0])
    k = 10 ** (k_db / 10)
    phi = torch.rand(n, generator=g, **f64) * 2 * math.pi
    h = (torch.sqrt(k / (k + 1)) * torch.exp(1j * phi)).unsqueeze(1) * _steer(torch.sin(theta), cfg.n_tx)
    if cfg.n_scatter:
        ang = theta.unsqueeze(1) + torch.randn(n, cfg.n_scatter, generator=g, **f64) * math.radians(cfg.angle_spread_deg)
        gains = torch.complex(torch.randn(n, cfg.n_scatter, generator=g, **f64), torch.randn(n, cfg.n_scatter, generator=g, **f64)) / math.sqrt(2)
        scat = (gains.unsqueeze(-1) * _steer(torch.sin(ang), cfg.n_tx)).sum(1)
        h = h + torch.sqrt(1 / ((k + 1) * cfg.n_scatter)).unsqueeze(1) * scat
    gain_a = (h.conj() @ set_a.T).abs() ** 2  # |w^H h|^2 for real-valued-phase beams: conj on h side
    gain_b = (h.conj() @ set_b.T).abs() ** 2
    rx_dbm = cfg.tx_power_dbm - (cfg.pl_intercept_db + cfg.pl_slope_db * torch.log10(d))
    power_mw = 10 ** (rx_dbm.unsqueeze(1) / 10) * gain_b + 10 ** (cfg.noise_dbm / 10)
    rsrp = 10 * torch.log10(power_mw) + torch.randn(n, cfg.n_beams_b, generator=g, **f64) * cfg.meas_std_db
    if cfg.report == "3gpp":
        rsrp = rsrp_from_report(rsrp_report(rsrp)).double()
    return rsrp.float(), gain_a.argmax(1)


# 3GPP TS 38.133 Table 10.1.6.1-1 (SS-RSRP and CSI-RSRP report mapping): reported value RSRP_r
# covers [r - 157, r - 156) dBm, r = 0..127 (7 bits); the L1 reporting range is -140 to -44 dBm,
# i.e. RSRP_16 (below -140) to RSRP_113 (-44 and above).
RSRP_BITS = 7
RSRP_OFFSET_DB = 157
L1_RSRP_REPORTS = (16, 113)


def rsrp_report(rsrp_dbm: torch.Tensor) -> torch.Tensor:
    """The L1-RSRP reported values (int64, 16..113) of measurements in dBm."""
    r = torch.floor(rsrp_dbm.double()) + RSRP_OFFSET_DB
    return r.clamp(*L1_RSRP_REPORTS).long()


def rsrp_from_report(report: torch.Tensor) -> torch.Tensor:
    """dBm (float32) of reported values: the midpoint of each 1 dB step, ``r - 156.5``."""
    return report.float() - (RSRP_OFFSET_DB - 0.5)


def class_balance(labels: torch.Tensor, num_classes: int) -> dict:
    """How balanced a labelled set is: per-class counts, their min/max, how many classes are
    empty, and the accuracy of always answering the majority class (a floor for any student)."""
    counts = torch.bincount(labels.long(), minlength=num_classes)
    n = int(counts.sum())
    p = counts.double() / max(n, 1)
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum() / math.log(num_classes)) if num_classes > 1 else 1.0
    return {"counts": counts.tolist(), "min": int(counts.min()), "max": int(counts.max()),
            "empty_classes": int((counts == 0).sum()), "majority_accuracy": 100.0 * int(counts.max()) / max(n, 1),
            "normalized_entropy": round(entropy, 4)}


def parse_beam_args(arg: str | None) -> BeamConfig:
    import yaml

    known = {f.name: f for f in fields(BeamConfig)}
    kw = {}
    for part in filter(None, (arg or "").split(",")):
        if "=" not in part:
            raise TinysetError(f"beam argument {part!r} must look like key=value (keys: {', '.join(known)})")
        key, raw = (s.strip() for s in part.split("=", 1))
        if key not in known:
            raise TinysetError(f"unknown beam parameter {key!r}; known: {', '.join(known)}")
        val = yaml.safe_load(raw.replace(";", ","))
        kw[key] = tuple(val) if isinstance(val, list) else val
    return BeamConfig(**kw).check()


def build_beam_dataset(bcfg: BeamConfig) -> Dataset:
    g = torch.Generator().manual_seed(int(bcfg.seed))
    xtr, ytr = generate(bcfg, bcfg.n_train, g)
    xte, yte = generate(bcfg, bcfg.n_test, g)
    train, test = TensorSplit(xtr, ytr), TensorSplit(xte, yte)
    mean, std = channel_stats(train)
    name = "beam" if bcfg == BeamConfig() else "beam:" + ",".join(
        f"{k}={v}" for k, v in asdict(bcfg).items() if v != getattr(BeamConfig(), k))
    info = DatasetInfo(
        name=name, num_classes=bcfg.n_beams_a, class_names=tuple(f"beam{k:02d}" for k in range(bcfg.n_beams_a)),
        shape=(bcfg.n_beams_b,), mean=mean, std=std, kind="vector", source="tinyset.data.beam (generated)",
        extra={"beam_config": asdict(bcfg), "class_counts": torch.bincount(ytr, minlength=bcfg.n_beams_a).tolist()},
    )
    return Dataset(info=info, train=train, test=test)


@register_dataset("beam", "generated 3GPP-style beam prediction: L1-RSRP of 8 wide beams -> best of 32 narrow beams (vectors)")
def build_beam(arg: str | None, cfg: DataConfig) -> Dataset:
    return build_beam_dataset(BeamConfig())


@register_dataset("beam:<key=value,...>", "the beam generator with parameters overridden (see README: beam data)")
def build_beam_args(arg: str | None, cfg: DataConfig) -> Dataset:
    return build_beam_dataset(parse_beam_args(arg))


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of samples whose label is among the ``k`` highest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return 100.0 * float((top == labels.unsqueeze(1)).any(1).float().mean())
