"""Quantizers for distilled sets (uniform, APoT, learned codebook) and low-bit storage helpers.

Every quantizer is an ``nn.Module`` with exact integer ``encode``/``decode``, ``state()`` (what is
stored beside the codes) and ``cost_bytes(shape)`` (exact stored bytes)."""
from . import apot, codebook, uniform  # noqa: F401  (registration)
from .apot import apot_levels
from .base import (
    GRANULARITIES,
    QUANTIZERS,
    Quantizer,
    build_quantizer,
    group_shape,
    quantizer_from_config,
    register_quantizer,
)
from .bitpack import pack_bits, packed_nbytes, unpack_bits

__all__ = [
    "GRANULARITIES", "QUANTIZERS", "Quantizer", "apot_levels", "build_quantizer", "group_shape",
    "pack_bits", "packed_nbytes", "quantizer_from_config", "register_quantizer", "unpack_bits",
]
