"""Post-hoc compression of any artifact (E2D's, RDED's, DM's ...): quantize the finished set with
a calibrated quantizer and store it as codes + state. The baseline the quantizer-in-the-loop must
beat: ``tinyset compress RUN --quantizer apot --bits 3 --out RUN-3bit``.

Calibration (``calibrate_steps``) fits only the quantizer's clips/levels to the set by Adam on the
mean squared error, so the baseline gets a fair clip rather than the raw min/max.

The quantizer's conventions (``grid``, ``ste``, ``ties``) take the same defaults as the in-loop
quantizer (``None`` = the quantizer's own: midtread, clipped, away) and the resolved values are
recorded (``manifest["compression"]["quantizer_config"]`` and the decoder config).

Label modes (``labels``): ``hard`` (the set alone), ``stored`` (the teacher's logits on the
decoded set stored beside it, top ``soft_k`` at ``soft_bits``: the set ships without its teacher)
or ``teacher`` (the online teacher, whose bytes are counted). ``student_bytes`` counts the mode."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from ..artifact import load_artifact, save_quantized_set
from ..errors import TinysetError
from ..quant.inloop import LoopQuantizer, QuantizerConfig, merge_encoded

log = logging.getLogger(__name__)

_DROP = ("format_version", "tinyset_version", "created", "components", "total_bytes", "total_bits", "checksums",
         "decoder", "bits", "set_bytes", "student_bytes", "label_bytes", "label_mode", "soft_labels")
LABELS = ("hard", "stored", "teacher")


@dataclass
class CompressConfig:
    quantizer: str = "apot"
    bits: int = 3
    granularity: str = "tensor"
    signed: bool | None = None
    space: str = "auto"
    calibrate_steps: int = 100
    lr: float = 0.01
    # conventions, as QuantizerConfig (None = the quantizer's default: midtread, clipped, away)
    grid: str | None = None  # signed uniform: midtread | midrise
    ste: str | None = None  # clipped | calibrated
    ties: str | None = None  # away | even (uniform) | down (apot)
    # what a student learns from besides the set (counted in student_bytes)
    labels: str = "hard"  # hard | stored (soft labels stored beside the set) | teacher (online, counted)
    soft_k: int | None = None  # stored: top-k classes per sample (None = all)
    soft_bits: int = 8  # stored: bits per stored logit (1-8, or 32 = float32)

    def quantizer_config(self) -> QuantizerConfig:
        return QuantizerConfig(name=self.quantizer, bits=self.bits, granularity=self.granularity, signed=self.signed,
                               space=self.space, lr=self.lr, grid=self.grid, ste=self.ste, ties=self.ties)


def _info(art):
    m = art.manifest
    norm = m.get("normalization") or {}
    x = art.images
    kind = "vector" if x.dim() == 2 else "image"
    width = x.shape[1]
    mean = norm.get("mean") or (m.get("dataset_info") or {}).get("mean") or [0.0] * width
    std = norm.get("std") or (m.get("dataset_info") or {}).get("std") or [1.0] * width
    return SimpleNamespace(kind=kind, mean=tuple(mean), std=tuple(std))


def num_classes_of(art) -> int:
    info = art.manifest.get("dataset_info") or {}
    if info.get("num_classes"):
        return int(info["num_classes"])
    names = art.class_names
    return len(names) if names else int(art.labels.max()) + 1


def quantize_set(x: torch.Tensor, y: torch.Tensor, info, cfg: CompressConfig, num_classes: int):
    """(decoded tensor, quantized components tuple) for a finished set."""
    lq = LoopQuantizer(cfg.quantizer_config(), x, info)
    lq.calibrate(x, cfg.calibrate_steps)
    latent = lq.latent(x)
    with torch.no_grad():
        decoded = lq(latent).detach()
    quantized = merge_encoded([lq.encoded(latent)], torch.arange(len(x)), y, num_classes)
    return decoded, quantized


def label_extras(cfg: CompressConfig, images: torch.Tensor, teacher: torch.nn.Module | None, source_manifest: dict,
                 device="cpu") -> tuple[dict, tuple | None]:
    """(manifest additions, soft labels for ``save_artifact``) for ``cfg.labels``."""
    from ..artifact import teacher_bytes
    from ..eval.protocol import teacher_logits
    from ..quant.soft_labels import check_soft, encode_soft_labels

    if cfg.labels not in LABELS:
        raise TinysetError(f"labels must be one of {', '.join(LABELS)}, got {cfg.labels!r}")
    extra: dict = {"label_mode": cfg.labels}
    tb = teacher_bytes(teacher) if teacher is not None else source_manifest.get("teacher_bytes")
    if tb:
        extra["teacher_bytes"] = tb
    if cfg.labels == "teacher" and not tb:
        raise TinysetError("labels=teacher counts the online teacher's bytes: give the teacher (--teacher CHECKPOINT)")
    soft = None
    if cfg.labels == "stored":
        if teacher is None:
            raise TinysetError("labels=stored stores the teacher's soft labels of the set: give the teacher "
                               "(--teacher CHECKPOINT, or a run whose config names a trained teacher)")
        logits = teacher_logits(teacher, images, device)
        check_soft(cfg.soft_k, cfg.soft_bits, logits.shape[1])
        soft = encode_soft_labels(logits, cfg.soft_k, cfg.soft_bits)
    return extra, soft


def compress_artifact(src: str | Path, out: str | Path, cfg: CompressConfig, overwrite: bool = False,
                      teacher: torch.nn.Module | None = None) -> Path:
    """Quantize ``src`` into ``out``; ``teacher`` (a model) labels it for ``cfg.labels="stored"`` and
    is counted for ``"teacher"``."""
    art = load_artifact(src)
    x, y = art.images.float(), art.labels
    if y is None or y.dim() != 1:
        raise TinysetError(f"{src}: compress needs hard labels [N]; this artifact has {None if y is None else list(y.shape)}")
    k = num_classes_of(art)
    decoded, quantized = quantize_set(x, y, _info(art), cfg, k)
    mse = float(((decoded - x) ** 2).mean())
    manifest = {key: v for key, v in art.manifest.items() if key not in _DROP}
    manifest["compressed_from"] = {"path": str(src), "total_bytes": art.total_bytes, "set_bytes": art.set_bytes,
                                   "student_bytes": art.student_bytes(), "label_mode": art.label_mode,
                                   "decoder": art.decoder["name"]}
    manifest["compression"] = {**cfg.__dict__, "mse": mse, "quantizer_config": quantized[3]["quantizer"]}
    extra, soft = label_extras(cfg, decoded, teacher, art.manifest)
    manifest.update(extra)
    path = save_quantized_set(out, quantized, manifest, decoded, y, class_names=art.class_names, overwrite=overwrite,
                              soft_labels=soft)
    if (Path(src) / "config.yaml").is_file():  # so `tinyset eval OUT` knows the dataset and teacher
        shutil.copy(Path(src) / "config.yaml", Path(out) / "config.yaml")
    done = load_artifact(out, verify=False)
    log.info("compressed %s (set %d B) -> %s (set %d B, student %d B with %s labels), mse %.3g", src, art.set_bytes,
             out, done.set_bytes, done.student_bytes(), done.label_mode, mse)
    return path


def attach_soft_labels(src: str | Path, out: str | Path, teacher: torch.nn.Module, k: int | None = None, bits: int = 8,
                       overwrite: bool = False, device="cpu") -> Path:
    """A copy of the artifact ``src`` (same set file) with the teacher's soft labels of its decoded
    set stored beside it (label mode ``stored``), so it trains without the teacher."""
    from ..artifact import save_artifact

    art = load_artifact(src)
    cfg = CompressConfig(labels="stored", soft_k=k, soft_bits=bits)
    extra, soft = label_extras(cfg, art.images.float(), teacher, art.manifest, device)
    manifest = {key: v for key, v in art.manifest.items() if key not in _DROP}
    comps = art.manifest["components"]
    manifest["bits"] = {n: c["bits"] for n, c in comps.items() if c["dtype"] == "uint8" and c["bits"] != 8}
    manifest.update(extra)
    roles = {n: c.get("role") for n, c in comps.items()}
    preview = "decoded" if art.images.dim() == 4 else None
    path = save_artifact(out, art.tensors, manifest, preview=preview, class_names=art.class_names, overwrite=overwrite,
                         decoder=art.decoder["name"], decoder_config=art.decoder["config"], roles=roles, soft_labels=soft)
    if (Path(src) / "config.yaml").is_file():
        shutil.copy(Path(src) / "config.yaml", Path(out) / "config.yaml")
    return path
