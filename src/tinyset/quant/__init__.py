"""Low-bit storage helpers for quantised distilled sets (the artifact records each payload's bit width)."""
from .bitpack import pack_bits, packed_nbytes, unpack_bits

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes"]
