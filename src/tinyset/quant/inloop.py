"""Quantization inside an optimisation loop (QuADD): the loop optimises a *latent* and every
forward pass sees ``space.to_data(Q(latent))``; the quantizer's parameters learn alongside.

Used by DM (``methods/dm.py``) and the recovery loop (E2D, SRe2L). The result is stored as codes +
quantizer state (the ``quantized`` decoder), which decode to exactly what the last forward saw.

Units: a method that splits work into several units returns one encoding per unit; they merge
into one set when the quantizer's state is per image (``granularity=image``) or when there is a
single unit (DM runs every class in one unit, so per-set and per-channel clips work there)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.base import DatasetInfo
from ..errors import TinysetError
from .base import Quantizer, build_quantizer, quantizer_from_config
from .space import DataSpace


@dataclass
class QuantizerConfig:
    """``name: null`` = no quantizer (a float32 set)."""

    name: str | None = None  # uniform | apot | codebook
    bits: int = 3
    granularity: str = "tensor"  # tensor | channel | image
    signed: bool | None = None  # default: apot signed, uniform/codebook unsigned
    space: str = "auto"  # pixels | normalized | auto (signed -> normalized units, else [0, 1] pixels)
    lr: float = 0.01  # Adam lr of the quantizer's own parameters (clips, levels)
    # conventions (null = the quantizer's default; see quant/uniform.py, quant/apot.py, quant/base.py)
    grid: str | None = None  # signed uniform: midtread (default, the APoT paper's Q^u: 2^b - 1 levels with 0) | midrise
    ste: str | None = None  # clipped (default: no gradient to the data outside the clip) | calibrated (1 everywhere)
    ties: str | None = None  # uniform/apot: away (default: exact halves on |x|, away from zero) | even (uniform) | down (apot)
    # where the loop's clips start and whether they move: by default they start from the data's range and
    # follow the loop's loss; calibrate = Adam steps (at lr) fitting them to the starting data's
    # reconstruction MSE first (what post-hoc compression does); freeze = the loop never moves them
    calibrate: int = 0
    freeze: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.name)

    def build(self) -> Quantizer:
        """The (uninitialised) quantizer this config names."""
        return build_quantizer(self.name, self.bits, self.granularity, signed=self.signed, grid=self.grid,
                               ste=self.ste, ties=self.ties)


def resolve_space(qcfg: QuantizerConfig, quantizer: Quantizer, kind: str) -> str:
    """``auto``: normalised units for signed quantizers and for vectors (raw features such as dBm
    have no natural [0, 1] scale, and a clip lr of 0.01 in their units barely moves), [0, 1]
    pixels otherwise."""
    if qcfg.space != "auto":
        return qcfg.space
    return "normalized" if quantizer.signed or kind == "vector" else "pixels"


def data_space(qcfg: QuantizerConfig, quantizer: Quantizer, info: DatasetInfo) -> DataSpace:
    space = resolve_space(qcfg, quantizer, info.kind)
    clamp = [0.0, 1.0] if info.kind == "image" else None
    if space == "pixels":
        return DataSpace(clamp=clamp)
    if space == "normalized":
        return DataSpace(mean=list(info.mean), std=list(info.std), clamp=clamp)
    raise TinysetError(f"quantizer space must be pixels, normalized or auto, not {qcfg.space!r}")


class LoopQuantizer(nn.Module):
    """A quantizer plus the space it works in, initialised on the starting data ``x0``."""

    def __init__(self, qcfg: QuantizerConfig, x0: torch.Tensor, info: DatasetInfo):
        super().__init__()
        self.qcfg = qcfg
        self.q = qcfg.build()
        self.space = data_space(qcfg, self.q, info)
        self.q.init_from(self.space.from_data(x0.float()))
        if qcfg.calibrate < 0:
            raise TinysetError(f"quantizer calibrate must be >= 0 Adam steps, got {qcfg.calibrate}")
        self.calibrate(x0.float(), qcfg.calibrate)
        if qcfg.freeze:
            self.q.requires_grad_(False)

    def calibrate(self, x: torch.Tensor, steps: int) -> None:
        """Fit the quantizer's parameters to ``x``'s reconstruction MSE (in data units) by ``steps``
        Adam steps at the config's lr: post-hoc compression's calibration, and ``calibrate``'s."""
        if steps <= 0:
            return
        latent = self.latent(x)
        opt = torch.optim.Adam(self.q.parameters(), lr=self.qcfg.lr)
        for _ in range(steps):
            loss = ((self(latent) - x) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def latent(self, x0: torch.Tensor) -> torch.Tensor:
        """The starting latent: real data mapped into the quantizer's space (so the first forward
        pass is the quantized real data)."""
        return self.space.from_data(x0.float()).detach().clone()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.space.to_data(self.q(latent))

    def optimizer(self) -> torch.optim.Optimizer | None:
        """The loop's optimiser of the quantizer's parameters; None when they are frozen."""
        return None if self.qcfg.freeze else torch.optim.Adam(self.q.parameters(), lr=self.qcfg.lr)

    def encoded(self, latent: torch.Tensor) -> dict[str, Any]:
        """Per-unit encoding: integer codes, quantizer state and the config to rebuild them."""
        with torch.no_grad():
            codes = self.q.encode(latent.detach()).cpu()
        # contiguous: the recovery loop's latent may be channels_last, and safetensors needs C order
        return {"codes": codes.to(torch.uint8).contiguous(), "state": self.q.state(), "quantizer": self.q.config(),
                "space": self.space.to_config()}


def encoded_to_tensors(enc: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an encoding into (safetensors-able tensors, JSON meta) for the unit cache."""
    tensors = {"enc.codes": enc["codes"].contiguous(), **{f"enc.q.{k}": v.contiguous() for k, v in enc["state"].items()}}
    return tensors, {"quantizer": enc["quantizer"], "space": enc["space"]}


def encoded_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {k[len("enc.q."):]: v for k, v in tensors.items() if k.startswith("enc.q.")}
    return {"codes": tensors["enc.codes"], "state": state, **meta}


def merge_encoded(units: list[dict[str, Any]], order: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """One quantized set from per-unit encodings (concatenated in unit order, then ``order``
    applied, as the pipeline does with the images). Returns save_artifact's (components, bits,
    roles, decoder_config)."""
    from .codes import components_from_codes

    first = units[0]
    for u in units[1:]:
        if u["quantizer"] != first["quantizer"] or u["space"] != first["space"]:
            raise TinysetError("units were quantized with different quantizer settings; cannot merge them into one set")
    codes = torch.cat([u["codes"] for u in units]).long()[order]
    if len(units) == 1:
        state = dict(first["state"])
    elif first["quantizer"]["granularity"] == "image":
        state = {k: torch.cat([u["state"][k] for u in units])[order] for k in first["state"]}
    else:
        raise TinysetError(
            f"a {first['quantizer']['granularity']}-granularity quantizer runs per unit and this method made "
            f"{len(units)} units; use quantizer granularity=image (one clip per image) for it"
        )
    q = quantizer_from_config(first["quantizer"], state, list(codes.shape))  # validates the state
    return components_from_codes(codes, q, labels, num_classes, first["quantizer"], first["space"])


_WIDEST_FLOAT = -2.2250738585072014e-308  # the longest float repr: stands in for unknown statistics


def set_cost_bytes(qcfg: QuantizerConfig | None, n: int, sample_shape, num_classes: int, info=None) -> int:
    """Exact bytes of the set file (``set_bytes``: payload, safetensors header and the decoder
    config it carries) for ``n`` samples: float32 data + int64 labels without a quantizer (as the
    pipeline stores them), else codes + quantizer state + packed labels. ``info`` (the dataset's
    kind, mean and std) makes the decoder config exact for normalised spaces; without it the
    statistics are sized by the longest float, an upper bound."""
    from .bitpack import packed_nbytes
    from .codes import label_bits
    from ..utils.setfile import safetensors_file_bytes, set_file_metadata

    shape = (n, *sample_shape)
    if qcfg is None or not qcfg.enabled:
        specs = {"images": (torch.float32, shape), "labels": (torch.int64, (n,))}
        return safetensors_file_bytes(specs, set_file_metadata("pixels", {}))
    q = qcfg.build()
    lb = label_bits(num_classes)
    specs = {"codes": (torch.uint8, (packed_nbytes(math.prod(shape), q.bits),))}
    specs.update({f"q.{k}": (torch.float32, s) for k, s in q.state_shapes(shape).items()})
    specs["labels"] = (torch.uint8, (packed_nbytes(n, lb),)) if lb <= 8 else (torch.int32, (n,))
    if info is None:
        from types import SimpleNamespace

        width = sample_shape[0] if sample_shape else 1
        info = SimpleNamespace(kind="image" if len(sample_shape) == 3 else "vector", mean=(_WIDEST_FLOAT,) * width,
                               std=(_WIDEST_FLOAT,) * width)
    dcfg = {"quantizer": q.config(), "shape": list(shape), "space": data_space(qcfg, q, info).to_config(),
            "label_bits": lb if lb <= 8 else 32, "num_samples": n}
    return safetensors_file_bytes(specs, set_file_metadata("quantized", dcfg))
