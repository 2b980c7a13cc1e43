"""Bit packing: exact round trips, honest sizes, loud errors."""
import math

import numpy as np
import pytest
import torch

from tinyset.errors import TinysetError
from tinyset.quant import bitpack, pack_bits, packed_nbytes, unpack_bits


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("numel", [0, 1, 7, 8, 1001])
def test_round_trip(bits, numel):
    g = torch.Generator().manual_seed(bits * 1000 + numel)
    values = torch.randint(0, 2**bits, (numel,), generator=g, dtype=torch.int64)
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == packed_nbytes(numel, bits) == math.ceil(numel * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, numel), values.to(torch.uint8))


def test_multidim_and_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(bitpack, "_CHUNK", 16)  # force many chunks
    values = torch.randint(0, 8, (5, 7, 3), dtype=torch.uint8)
    packed = pack_bits(values, 3)
    assert torch.equal(unpack_bits(packed, 3, values.numel()).reshape(values.shape), values)


def test_layout_is_little_endian():
    bits = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.uint8)
    expected = np.packbits(bits.numpy(), bitorder="little")
    assert pack_bits(bits, 1).tolist() == expected.tolist() == [13, 1]
    assert pack_bits(torch.tensor([0xA, 0x5, 0xF]), 4).tolist() == [0x5A, 0x0F]


@pytest.mark.parametrize("bad", [torch.tensor([4]), torch.tensor([-1])])
def test_out_of_range_values_raise(bad):
    with pytest.raises(TinysetError, match="must lie in"):
        pack_bits(bad, 2)


@pytest.mark.parametrize("bits", [0, 9, 2.0, True])
def test_bad_bits_raise(bits):
    with pytest.raises(TinysetError, match="bits must be"):
        pack_bits(torch.tensor([0]), bits)


def test_float_input_and_wrong_length_raise():
    with pytest.raises(TinysetError, match="integer tensor"):
        pack_bits(torch.tensor([0.0]), 4)
    with pytest.raises(TinysetError, match="packed bytes"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 7)
