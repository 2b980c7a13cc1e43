"""The set file: what a student needs, in one safetensors file, and its exact size before it exists.

An artifact's ``tensors.safetensors`` holds the stored components (codes, quantizer state, labels,
or float pixels) and, in its header's ``__metadata__``, the decoder that turns them into training
tensors (``{"name", "config"}`` as JSON). The file is therefore self-contained: ``set_bytes`` (its
size on disk: payload + header + decode metadata) is every byte a student needs besides its label
mode's (``artifact.sizes``). ``manifest.json`` beside it is provenance (what made the set), not
needed to train on it.

``safetensors_file_bytes`` predicts the size of such a file from shapes and dtypes alone (the
budget planner sizes sets it has not made); it follows safetensors' layout: an 8-byte header
length, the JSON header padded with spaces to a multiple of 8, then the tensors in the library's
own order (dtype, then name; probed once from the installed library, not assumed)."""
from __future__ import annotations

import json
import math
import struct
from functools import lru_cache
from typing import Any, Mapping, Sequence

import torch

FORMAT_VERSION = 2  # the artifact format (artifact/format.py re-exports it)
SET_FORMAT = "tinyset-artifact"
SOFT_FORMAT = "tinyset-soft-labels"

_ST_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
    torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
}


def compact_json(obj: Any) -> str:
    """The JSON form stored in a set file's header (no spaces; the same string is written and sized)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


def set_file_metadata(decoder: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The header metadata of a set file: format, version and the decoder (name + config)."""
    return {"format": SET_FORMAT, "format_version": str(FORMAT_VERSION),
            "decoder": compact_json({"name": decoder, "config": dict(config)})}


def soft_file_metadata(config: Mapping[str, Any]) -> dict[str, str]:
    """The header metadata of a stored-soft-labels file (``quant.soft_labels``)."""
    return {"format": SOFT_FORMAT, "format_version": str(FORMAT_VERSION), "soft_labels": compact_json(dict(config))}


@lru_cache(maxsize=None)
def _dtype_rank() -> dict[str, int]:
    """Where safetensors puts each dtype in the data section (earlier = smaller rank), read back
    from a file the installed library writes."""
    import safetensors.torch

    probe = {f"t{i}": torch.zeros(1, dtype=dt) for i, dt in enumerate(_ST_DTYPES)}
    blob = safetensors.torch.save(probe)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    return {header[k]["dtype"]: i for i, k in enumerate(order)}


def tensor_spec(t: torch.Tensor) -> tuple[str, tuple[int, ...]]:
    return _ST_DTYPES[t.dtype], tuple(t.shape)


def safetensors_file_bytes(specs: Mapping[str, tuple[Any, Sequence[int]]], metadata: Mapping[str, str] | None) -> int:
    """Exact size of the safetensors file holding tensors ``{name: (dtype, shape)}`` (dtype a
    ``torch.dtype`` or a safetensors name like ``"U8"``) with this header ``metadata``."""
    rank = _dtype_rank()
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
    norm = {}
    for name, (dtype, shape) in specs.items():
        st = _ST_DTYPES[dtype] if isinstance(dtype, torch.dtype) else str(dtype)
        norm[name] = (st, [int(s) for s in shape])
    order = sorted(norm, key=lambda k: (rank[norm[k][0]], k))
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        st, shape = norm[name]
        nbytes = math.prod(shape) * sizes[st]
        header[name] = {"dtype": st, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    n = len(compact_json(header).encode("utf-8"))
    return 8 + n + (-n) % 8 + offset


def tensors_file_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> int:
    """``safetensors_file_bytes`` for real tensors."""
    return safetensors_file_bytes({k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}, metadata)
