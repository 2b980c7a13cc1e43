"""Stored soft labels: a teacher's logits kept per sample, top-k or full, at their own bits, so a set
can ship without its teacher (the ``stored`` label mode; counted in ``student_bytes``).

What is stored (``soft_labels.safetensors`` beside the set file; ``artifact`` writes it):

- full (``k`` = number of classes K): every logit relative to the sample's largest, ``z - max z``
  in ``[-R, 0]``, K values per sample;
- top-k (``k < K``): the k classes of largest logit (``soft.index``, descending, packed at
  ceil(log2 K) bits), the k - 1 logits after the first (the first is the maximum: 0), and one
  *rest* logit ``logsumexp(others) - log(K - k)``: each other class gets an even share of the mass
  the teacher gave them all (the top-k compression of stored-label methods). k values per sample.

Values are quantized uniformly on ``[-R, 0]`` at ``bits`` (1-8; codes bit-packed) with one float32
range ``R`` per set (the largest stored magnitude), or kept as float32 with ``bits=32``. Decoding
gives logits [N, K] (maximum 0); a student's target is ``softmax(logits / T)`` at its protocol's
temperature, the same as the online teacher's at the un-augmented image."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import TinysetError
from ..utils.setfile import safetensors_file_bytes, soft_file_metadata
from .bitpack import pack_bits, packed_nbytes, unpack_bits
from .codes import label_bits, pack_labels, unpack_labels

SOFT_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)


def check_soft(k: int | None, bits: int, num_classes: int) -> int:
    """The resolved k (None or 0 = every class); a bad k or bits is a one-line error."""
    k = num_classes if not k else int(k)
    if not 1 <= k <= num_classes:
        raise TinysetError(f"soft-label k must be 1-{num_classes} (the number of classes), got {k}")
    if isinstance(bits, bool) or bits not in SOFT_BITS:
        raise TinysetError(f"soft-label bits must be 1-8 or 32, got {bits!r}")
    return k


def soft_config(n: int, num_classes: int, k: int | None, bits: int) -> dict[str, Any]:
    k = check_soft(k, bits, num_classes)
    cfg = {"k": k, "bits": bits, "num_classes": num_classes, "num_samples": int(n), "values": "logits - max"}
    if k < num_classes:
        cfg["index_bits"] = label_bits(num_classes) if label_bits(num_classes) <= 8 else 32
    return cfg


def _values_per_sample(cfg: dict) -> int:
    return cfg["num_classes"] if cfg["k"] == cfg["num_classes"] else cfg["k"]


def soft_label_specs(cfg: dict) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """{name: (dtype, shape)} of the stored tensors (for an exact size before encoding)."""
    n, m = cfg["num_samples"], _values_per_sample(cfg)
    specs: dict[str, tuple[Any, tuple[int, ...]]] = {}
    if cfg["bits"] == 32:
        specs["soft.values"] = (torch.float32, (n, m))
    else:
        specs["soft.codes"] = (torch.uint8, (packed_nbytes(n * m, cfg["bits"]),))
        specs["soft.range"] = (torch.float32, (1,))
    if cfg["k"] < cfg["num_classes"]:
        ib = cfg["index_bits"]
        specs["soft.index"] = (torch.int32, (n * cfg["k"],)) if ib == 32 else (torch.uint8, (packed_nbytes(n * cfg["k"], ib),))
    return specs


def soft_label_file_bytes(n: int, num_classes: int, k: int | None, bits: int) -> int:
    """Exact size of the soft-labels file for ``n`` samples (what the ``stored`` label mode adds)."""
    cfg = soft_config(n, num_classes, k, bits)
    return safetensors_file_bytes(soft_label_specs(cfg), soft_file_metadata(cfg))


def encode_soft_labels(logits: torch.Tensor, k: int | None = None, bits: int = 8) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config) storing ``logits`` [N, K] as described above."""
    if logits.dim() != 2:
        raise TinysetError(f"soft labels must be logits [N, K], got shape {list(logits.shape)}")
    z = logits.detach().float().cpu()
    n, num_classes = z.shape
    cfg = soft_config(n, num_classes, k, bits)
    k = cfg["k"]
    rel = z - z.max(dim=1, keepdim=True).values
    tensors: dict[str, torch.Tensor] = {}
    if k == num_classes:
        vals = rel
    else:
        top = rel.topk(k, dim=1)
        rest_mask = torch.ones_like(rel, dtype=torch.bool).scatter_(1, top.indices, False)
        others = rel.masked_fill(~rest_mask, float("-inf"))
        rest = torch.logsumexp(others, dim=1, keepdim=True) - math.log(num_classes - k)
        vals = torch.cat([top.values[:, 1:], rest], dim=1)
        tensors["soft.index"], _ = pack_labels(top.indices.reshape(-1), num_classes)
    if bits == 32:
        tensors["soft.values"] = vals.contiguous()
    else:
        r = float((-vals).max()) if vals.numel() else 0.0
        r = r if r > 0 else 1.0
        levels = (1 << bits) - 1
        codes = torch.round((vals.clamp(-r, 0.0) + r) / r * levels).clamp(0, levels).long()
        tensors["soft.codes"] = pack_bits(codes.reshape(-1), bits)
        tensors["soft.range"] = torch.tensor([r], dtype=torch.float32)
    return tensors, cfg


def decode_soft_labels(tensors: dict[str, torch.Tensor], cfg: dict) -> torch.Tensor:
    """Logits [N, K] (float32; each row's maximum is 0) from ``encode_soft_labels``' output."""
    n, num_classes, k, bits = cfg["num_samples"], cfg["num_classes"], cfg["k"], cfg["bits"]
    m = _values_per_sample(cfg)
    if bits == 32:
        vals = tensors["soft.values"].float().reshape(n, m)
    else:
        r = tensors["soft.range"].float().reshape(())
        levels = (1 << bits) - 1
        codes = unpack_bits(tensors["soft.codes"], bits, n * m).long().reshape(n, m)
        vals = codes.float() * (r / levels) - r
    if k == num_classes:
        return vals.contiguous()
    idx = unpack_labels(tensors["soft.index"], {"label_bits": cfg["index_bits"], "num_samples": n * k}).reshape(n, k)
    out = vals[:, -1:].expand(n, num_classes).clone()  # every other class: the rest logit
    top = torch.cat([torch.zeros(n, 1), vals[:, :-1]], dim=1)  # the first is the maximum
    return out.scatter_(1, idx, top).contiguous()
