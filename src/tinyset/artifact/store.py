"""Writing a quantized set and checking it decodes to exactly the tensors that were optimised."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import TinysetError
from .decoders import get_decoder
from .format import save_artifact


def save_quantized_set(
    out: str | os.PathLike, quantized: tuple, manifest: Mapping[str, Any], expected_images: torch.Tensor,
    expected_labels: torch.Tensor, class_names: Sequence[str] | None = None, overwrite: bool = False,
    soft_labels: tuple | None = None,
) -> Path:
    """Save ``quantized`` = (components, bits, roles, decoder_config) with the ``quantized``
    decoder, after checking that it decodes bit for bit to ``expected_images`` (what the loop's
    last forward pass produced) and ``expected_labels``."""
    comps, bits, roles, dcfg = quantized
    dec = get_decoder("quantized").decode(comps, dcfg)
    got = dec.get("images", dec.get("vectors"))
    if not torch.equal(got, expected_images.to(got.dtype)) or not torch.equal(dec["labels"], expected_labels.long()):
        diff = float((got - expected_images).abs().max()) if got.shape == expected_images.shape else float("nan")
        raise TinysetError(f"quantized set does not decode to the optimised tensors (max difference {diff}); not saving it")
    preview = "decoded" if got.dim() == 4 else None
    return save_artifact(out, comps, {**manifest, "bits": bits}, preview=preview, class_names=class_names,
                         overwrite=overwrite, decoder="quantized", decoder_config=dcfg, roles=roles,
                         soft_labels=soft_labels)
