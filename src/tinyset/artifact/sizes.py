"""Bytes a student needs, two ways (every table and ``manifest.json`` quote both):

- ``set_bytes``: the set file on disk (``tensors.safetensors``): codes or pixels, quantizer state,
  hard labels, the safetensors header and the decoder config it carries;
- ``student_bytes`` = ``set_bytes`` + what the label mode needs: ``hard`` nothing more, ``stored``
  the stored soft labels' file (top-k or full logits at their own bits, ``quant.soft_labels``),
  ``teacher`` the online teacher's parameters (and BatchNorm statistics) at their stored precision.

``teacher_bytes(model)`` counts a teacher; ``compression`` states ratios on both counts."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def teacher_bytes(model: nn.Module, bits: int | None = None) -> dict[str, Any]:
    """What an online teacher costs a student: every parameter and floating-point buffer (BatchNorm
    running statistics: needed to run it) at its stored precision (its dtype, or ``bits`` each).
    Integer buffers (BatchNorm's step counter) are not needed at inference and not counted."""
    net = getattr(model, "module", model)
    params = [p for p in net.parameters()]
    buffers = [b for b in net.buffers() if torch.is_floating_point(b)]
    n_params = sum(p.numel() for p in params)
    n_buffers = sum(b.numel() for b in buffers)
    if bits is None:
        nbytes = sum(t.numel() * t.element_size() for t in params + buffers)
        widths = sorted({t.element_size() * 8 for t in params + buffers})
        width = widths[0] if len(widths) == 1 else widths
    else:
        nbytes = ((n_params + n_buffers) * int(bits) + 7) // 8
        width = int(bits)
    return {"parameters": n_params, "buffers": n_buffers, "bits": width, "bytes": int(nbytes)}


def compression(ref_set: int, ref_student: int, set_bytes: int, student_bytes: int) -> dict[str, float]:
    """Compression ratios on both counts: ``set`` = ref set bytes / set bytes and ``student`` =
    ref student bytes / student bytes."""
    return {"set": ref_set / max(set_bytes, 1), "student": ref_student / max(student_bytes, 1)}
