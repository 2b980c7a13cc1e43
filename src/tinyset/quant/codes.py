"""How integer codes are stored: the bit-packed codes, the quantizer's state and the labels
packed at ceil(log2 K) bits (a student needs them; they are counted), with their bits, roles and
the ``quantized`` decoder's config.

The storage layout of a quantized set belongs to the quantizers (the in-loop quantizer, the
post-hoc compressor and the budget's byte count all use it); ``artifact.decoders`` reads it back.
Kept here so ``quant/`` stays a leaf that imports nothing above it."""
from __future__ import annotations

import math
from typing import Any

import torch

from .base import Quantizer
from .bitpack import pack_bits, unpack_bits

STATE_PREFIX = "q."  # quantizer state tensors are stored as q.<name>


def label_bits(num_classes: int) -> int:
    return max(1, math.ceil(math.log2(max(num_classes, 2))))


def pack_labels(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, int]:
    """Hard labels -> (packed uint8, bits); more than 256 classes are stored as int32."""
    bits = label_bits(num_classes)
    if bits > 8:
        return labels.to(torch.int32), 32
    return pack_bits(labels.long(), bits), bits


def unpack_labels(stored: torch.Tensor, config: dict) -> torch.Tensor:
    bits, n = config.get("label_bits"), config.get("num_samples")
    if stored.dtype != torch.uint8 or bits in (None, 32):
        return stored.long()
    return unpack_bits(stored, int(bits), int(n)).long()


def components_from_codes(
    codes: torch.Tensor, quantizer: Quantizer, labels: torch.Tensor, num_classes: int, qconfig: dict, space: dict
) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, str], dict[str, Any]]:
    """What the ``quantized`` decoder stores for integer ``codes``: the bit-packed codes, the
    quantizer's state and the packed labels, with their bits, roles and the decoder config."""
    comps = {"codes": pack_bits(codes, quantizer.bits)}
    bits = {"codes": quantizer.bits}
    roles = {"codes": "codes", "labels": "labels"}
    for k, v in quantizer.state().items():
        comps[STATE_PREFIX + k] = v
        roles[STATE_PREFIX + k] = "quantizer"
    comps["labels"], lbits = pack_labels(labels, num_classes)
    if lbits <= 8:
        bits["labels"] = lbits
    config = {"quantizer": qconfig, "shape": list(codes.shape), "space": space, "label_bits": lbits,
              "num_samples": int(codes.shape[0])}
    return comps, bits, roles, config
