"""Decoders: how a stored set becomes what a student trains on.

A format-2 artifact stores *components* (raw pixels, bit-packed codes, quantizer state, labels,
later bases and coefficients) and names a registered decoder with a small JSON config (Hugging
Face's ``config.json`` + weights pairing). ``load_artifact`` runs the decoder; evaluation, export
and preview only ever see its output:

``{"images": float [N, C, H, W] in [0, 1]`` (or ``"vectors": [N, D]``), ``"labels": int64 [N]``,
optionally ``"targets": float [N, d]`` (regression targets of self-supervised sets)}.

New parameterisations register with ``@register_decoder("name")``."""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..errors import TinysetError
from ..quant import quantizer_from_config, unpack_bits
from ..quant.base import Quantizer
from ..quant.codes import STATE_PREFIX, components_from_codes, label_bits, pack_labels, unpack_labels  # noqa: F401  (re-exported)
from ..quant.space import DataSpace
from ..registry import Registry

DECODERS: Registry[type["Decoder"]] = Registry("decoder")


def register_decoder(name: str, doc: str | None = None):
    """Class decorator: ``@register_decoder("bases") class BasesDecoder(Decoder): ...``."""

    def deco(cls: type[Decoder]) -> type[Decoder]:
        cls.name = name
        return DECODERS.register(name, doc)(cls)

    return deco


def get_decoder(name: str) -> "Decoder":
    return DECODERS.get(name)()


class Decoder:
    """Turns stored components + the manifest's decoder config into training tensors."""

    name: ClassVar[str] = ""

    def decode(self, components: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    @staticmethod
    def require(components: dict[str, torch.Tensor], *names: str) -> None:
        missing = [n for n in names if n not in components]
        if missing:
            raise TinysetError(f"decoder needs components {', '.join(missing)}; the artifact has {', '.join(sorted(components))}")


# --------------------------------------------------------------------------------------------
# pixels: the set is stored as it is trained on (format 1 artifacts decode with this)
# --------------------------------------------------------------------------------------------


@register_decoder("pixels", "float images (or vectors) and labels stored as they are trained on")
class PixelsDecoder(Decoder):
    def decode(self, components, config):
        key = config.get("data", "images")
        self.require(components, key)
        x = components[key]
        if x.dtype == torch.uint8 and config.get("uint8_scale"):  # 8-bit real images, k/255 exactly
            x = x.float() / 255.0
        out = {"vectors" if x.dim() == 2 else "images": x}
        if "labels" in components:
            y = components["labels"]
            out["labels"] = unpack_labels(y, config) if config.get("label_bits") else y
        if "targets" in components:
            out["targets"] = components["targets"]
        return out


# --------------------------------------------------------------------------------------------
# quantized: bit-packed codes + quantizer state (their storage layout: quant/codes.py)
# --------------------------------------------------------------------------------------------


@register_decoder("quantized", "bit-packed integer codes + quantizer state (uniform, apot, codebook)")
class QuantizedDecoder(Decoder):
    def decode(self, components, config):
        self.require(components, "codes")
        qcfg, shape = config.get("quantizer"), config.get("shape")
        if not isinstance(qcfg, dict) or not isinstance(shape, list):
            raise TinysetError("quantized decoder config needs 'quantizer' and 'shape'")
        state = {k[len(STATE_PREFIX):]: v for k, v in components.items() if k.startswith(STATE_PREFIX)}
        q = quantizer_from_config(qcfg, state, shape)
        codes = unpack_bits(components["codes"], q.bits, math.prod(shape)).long().reshape(shape)
        with torch.no_grad():
            x = DataSpace.from_config(config.get("space")).to_data(q.decode(codes))
        out = {"vectors" if len(shape) == 2 else "images": x.detach().contiguous()}
        if "labels" in components:
            out["labels"] = unpack_labels(components["labels"], config)
        return out


def quantized_components(
    latent: torch.Tensor, labels: torch.Tensor, quantizer: Quantizer, num_classes: int, space: DataSpace | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, str], dict[str, Any]]:
    """Encode ``latent`` with ``quantizer`` into (components, bits, roles, decoder config) for
    ``save_artifact(..., decoder="quantized")``. Decoding them gives ``space.to_data(quantizer(latent))``."""
    space = space or DataSpace()
    with torch.no_grad():
        codes = quantizer.encode(latent.detach()).cpu()
    return components_from_codes(codes, quantizer, labels.cpu(), num_classes, quantizer.config(), space.to_config())
