"""Saving and loading model checkpoints: weights plus what is needed to rebuild the model."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.base import DatasetInfo
from ..errors import TinysetError
from ..utils.files import sha256_file  # noqa: F401  (re-exported)
from .registry import NormalizedModel, get_model


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temp file in the same folder and rename, so an interrupt never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: nn.Module, path: str | Path, spec: str, info: DatasetInfo, meta: dict | None = None) -> None:
    atomic_torch_save(
        {"model": spec, "dataset_info": info.to_dict(), "state_dict": model.state_dict(), "meta": meta or {}}, path
    )


def load_model(
    path: str | Path, info: DatasetInfo, map_location: str | torch.device = "cpu", model_spec: str | None = None
) -> tuple[nn.Module, dict]:
    """Load a tinyset checkpoint, a whole pickled module, or a bare ``state_dict`` (e.g. torchvision
    weights the user has locally) into the architecture ``model_spec`` names (``--teacher-model``).
    A bare state_dict is taken to expect raw network inputs, so the dataset's normalisation wraps it."""
    path = Path(path)
    if not path.exists():
        raise TinysetError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file to the user
        raise TinysetError(f"checkpoint {path} could not be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(ckpt, nn.Module):
        model = ckpt if isinstance(ckpt, NormalizedModel) else NormalizedModel(ckpt, info.mean, info.std)
        return model, {"model": type(ckpt).__name__}
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        if not model_spec:
            raise TinysetError(f"checkpoint {path} is a bare state_dict; name its architecture with --teacher-model")
        net = get_model(model_spec, info, normalize=False)
        try:
            net.load_state_dict(ckpt)
        except RuntimeError as e:
            raise TinysetError(f"checkpoint {path} does not fit model {model_spec!r}: {str(e).splitlines()[0]}") from None
        return NormalizedModel(net, info.mean, info.std, image=info.kind == "image"), {"model": model_spec}
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise TinysetError(f"checkpoint {path} is not a tinyset checkpoint (need keys 'model' and 'state_dict')")
    saved = ckpt.get("dataset_info", {})
    if saved and saved.get("num_classes") != info.num_classes:
        raise TinysetError(
            f"checkpoint {path} was trained for {saved.get('num_classes')} classes, dataset {info.name} has {info.num_classes}"
        )
    model = get_model(ckpt["model"], info)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise TinysetError(f"checkpoint {path} does not fit model {ckpt['model']!r}: {str(e).splitlines()[0]}") from None
    return model, ckpt
