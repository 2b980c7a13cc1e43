"""Dense little-endian bit packing of small unsigned integers into uint8 bytes.

A quantised distilled set stores, say, 4-bit pixel codes; keeping them in one byte each would
double the reported storage, so they are packed back to back. Element ``i`` of the flattened
(C-order) tensor occupies stream bits ``[i*bits, (i+1)*bits)``, least significant bit first, and
stream bit ``p`` is bit ``p % 8`` of byte ``p // 8``. The final byte's unused high bits are zero.

Work is chunked (a multiple of 8 elements, so chunks start on byte boundaries) to keep the
temporary bit matrix small for large tensors."""
from __future__ import annotations

import torch

from ..errors import TinysetError

# Elements per chunk: a multiple of 8 so every chunk of ``bits``-bit values fills whole bytes.
_CHUNK = 1 << 20

_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool}


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise TinysetError(f"bits must be an integer from 1 to 8, got {bits!r}")
    return bits


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes needed for ``numel`` values of ``bits`` bits each: ``ceil(numel * bits / 8)``."""
    _check_bits(bits)
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise TinysetError(f"numel must be a non-negative integer, got {numel!r}")
    return (numel * bits + 7) // 8


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer ``values`` (any shape, each in ``[0, 2**bits)``) into a 1-D uint8 tensor of
    ``packed_nbytes(values.numel(), bits)`` bytes. The shape is not stored; keep it alongside."""
    _check_bits(bits)
    if not isinstance(values, torch.Tensor) or values.dtype not in _INT_DTYPES:
        got = values.dtype if isinstance(values, torch.Tensor) else type(values).__name__
        raise TinysetError(f"pack_bits needs an integer tensor, got {got}")
    flat = values.detach().cpu().reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise TinysetError(
            f"values must lie in [0, {(1 << bits) - 1}] for {bits}-bit packing, "
            f"got range [{int(flat.min())}, {int(flat.max())}]"
        )
    flat = flat.to(torch.uint8)
    if bits == 8:
        return flat.clone()
    shifts = torch.arange(bits, dtype=torch.uint8)
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)
    out = []
    for chunk in flat.split(_CHUNK):
        stream = ((chunk.unsqueeze(1) >> shifts) & 1).reshape(-1)  # [n*bits] of 0/1, LSB first
        pad = (-stream.numel()) % 8
        if pad:
            stream = torch.cat([stream, stream.new_zeros(pad)])
        # Distinct powers of two sum to at most 255, so uint8 arithmetic cannot overflow.
        out.append((stream.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a 1-D uint8 tensor of ``numel`` values (reshape as needed).
    ``packed`` must hold exactly ``packed_nbytes(numel, bits)`` bytes, so a wrong ``numel`` or
    ``bits`` is caught instead of silently decoding garbage."""
    expected = packed_nbytes(numel, bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        got = packed.dtype if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise TinysetError(f"unpack_bits needs a uint8 tensor, got {got}")
    flat = packed.detach().cpu().reshape(-1)
    if flat.numel() != expected:
        raise TinysetError(f"{numel} values of {bits} bits need {expected} packed bytes, got {flat.numel()}")
    if bits == 8:
        return flat.clone()
    byte_shifts = torch.arange(8, dtype=torch.uint8)
    weights = torch.tensor([1 << i for i in range(bits)], dtype=torch.uint8)
    out = []
    for start in range(0, numel, _CHUNK):
        n = min(_CHUNK, numel - start)
        # _CHUNK is a multiple of 8, so chunk ``start`` begins at byte start*bits/8 exactly.
        b0 = start * bits // 8
        chunk = flat[b0 : b0 + packed_nbytes(n, bits)]
        stream = ((chunk.unsqueeze(1) >> byte_shifts) & 1).reshape(-1)[: n * bits]
        out.append((stream.reshape(n, bits) * weights).sum(dim=1, dtype=torch.uint8))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)
