"""Post-hoc compression of any artifact (E2D's, RDED's, DM's ...): quantize the finished set with
a calibrated quantizer and store it as codes + state. The baseline the quantizer-in-the-loop must
beat: ``tinyset compress RUN --quantizer apot --bits 3 --out RUN-3bit``.

Calibration (``calibrate_steps``) fits only the quantizer's clips/levels to the set by Adam on the
mean squared error, so the baseline gets a fair clip rather than the raw min/max."""
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
         "decoder", "bits")


@dataclass
class CompressConfig:
    quantizer: str = "apot"
    bits: int = 3
    granularity: str = "tensor"
    signed: bool | None = None
    space: str = "auto"
    calibrate_steps: int = 100
    lr: float = 0.01


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
    qcfg = QuantizerConfig(name=cfg.quantizer, bits=cfg.bits, granularity=cfg.granularity, signed=cfg.signed,
                           space=cfg.space, lr=cfg.lr)
    lq = LoopQuantizer(qcfg, x, info)
    latent = lq.latent(x)
    opt = lq.optimizer()
    for _ in range(cfg.calibrate_steps):
        loss = ((lq(latent) - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        decoded = lq(latent).detach()
    quantized = merge_encoded([lq.encoded(latent)], torch.arange(len(x)), y, num_classes)
    return decoded, quantized


def compress_artifact(src: str | Path, out: str | Path, cfg: CompressConfig, overwrite: bool = False) -> Path:
    art = load_artifact(src)
    x, y = art.images.float(), art.labels
    if y is None or y.dim() != 1:
        raise TinysetError(f"{src}: compress needs hard labels [N]; this artifact has {None if y is None else list(y.shape)}")
    k = num_classes_of(art)
    decoded, quantized = quantize_set(x, y, _info(art), cfg, k)
    mse = float(((decoded - x) ** 2).mean())
    manifest = {key: v for key, v in art.manifest.items() if key not in _DROP}
    manifest["compressed_from"] = {"path": str(src), "total_bytes": art.total_bytes, "decoder": art.decoder["name"]}
    manifest["compression"] = {**cfg.__dict__, "mse": mse}
    path = save_quantized_set(out, quantized, manifest, decoded, y, class_names=art.class_names, overwrite=overwrite)
    if (Path(src) / "config.yaml").is_file():  # so `tinyset eval OUT` knows the dataset and teacher
        shutil.copy(Path(src) / "config.yaml", Path(out) / "config.yaml")
    log.info("compressed %s (%d B) -> %s (%d B), mse %.3g", src, art.total_bytes, out, load_artifact(out, verify=False).total_bytes, mse)
    return path
