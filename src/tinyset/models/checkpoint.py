"""Saving and loading model checkpoints: weights plus what is needed to rebuild the model."""
from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.base import DatasetInfo
from ..errors import TinysetError
from ..utils.files import atomic_path, sha256_file  # noqa: F401  (sha256_file re-exported)
from .registry import NormalizedModel, get_model

log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temp file in the same folder and rename, so an interrupt never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(model: nn.Module, path: str | Path, spec: str, info: DatasetInfo, meta: dict | None = None) -> None:
    atomic_torch_save(
        {"model": spec, "dataset_info": info.to_dict(), "state_dict": model.state_dict(), "meta": meta or {}}, path
    )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", trust: bool = False) -> Any:
    """The object in a checkpoint file, read without running code: ``torch.load(weights_only=True)``
    (tensors, numbers, strings, containers) or a ``.safetensors`` file (a tinyset teacher's metadata
    rides in its header). A file that needs pickle is refused unless ``trust`` (``--trust-checkpoint``)."""
    path = Path(path)
    if not path.exists():
        raise TinysetError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, map_location)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # not a class to import: the file is corrupt, not unsafe
            raise TinysetError(f"checkpoint {path} could not be read ({type(e).__name__}: {_first_line(e)})") from None
        if not trust:
            what = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if str(e) else ""
            raise TinysetError(
                f"checkpoint {path} needs pickle to load, which can run arbitrary code ({what[:120]}); "
                "if you trust this file, pass --trust-checkpoint (or teacher.trust_checkpoint=true)") from None
        log.warning("loading %s with pickle because --trust-checkpoint was given", path)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e2:  # noqa: BLE001 - any unpickling failure is a corrupt file to the user
            raise TinysetError(f"checkpoint {path} could not be read ({type(e2).__name__}: {_first_line(e2)})") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file is a corrupt file to the user
        raise TinysetError(f"checkpoint {path} could not be read ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _read_safetensors(path: Path, map_location) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(map_location))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001
        raise TinysetError(f"checkpoint {path} is not a readable safetensors file ({type(e).__name__}: {_first_line(e)})") from None
    if "model" not in meta:
        return tensors  # a bare state_dict: the architecture comes from --teacher-model
    return {"model": meta["model"], "dataset_info": json.loads(meta.get("dataset_info", "{}")),
            "meta": json.loads(meta.get("meta", "{}")), "state_dict": tensors}


def save_model_safetensors(model: nn.Module, path: str | Path, spec: str, info: DatasetInfo, meta: dict | None = None) -> None:
    """A teacher as safetensors: weights plus (model name, dataset info, meta) in the header."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"model": spec, "dataset_info": json.dumps(info.to_dict(), default=list),
                                             "meta": json.dumps(meta or {}, default=str)})


def load_model(
    path: str | Path, info: DatasetInfo, map_location: str | torch.device = "cpu", model_spec: str | None = None,
    trust: bool = False,
) -> tuple[nn.Module, dict]:
    """Load a tinyset checkpoint (``.pt`` or ``.safetensors``), a bare ``state_dict`` (e.g. torchvision
    weights the user has locally) into the architecture ``model_spec`` names (``--teacher-model``),
    or, only with ``trust``, a whole pickled module. A bare state_dict is taken to expect raw network
    inputs, so the dataset's normalisation wraps it."""
    path = Path(path)
    ckpt = read_checkpoint(path, map_location, trust)
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
            raise TinysetError(f"checkpoint {path} does not fit model {model_spec!r} on {info.name}: {_first_line(e)}") from None
        return NormalizedModel(net, info.mean, info.std, image=info.kind == "image"), {"model": model_spec}
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise TinysetError(f"checkpoint {path} is not a tinyset checkpoint (need keys 'model' and 'state_dict')")
    saved = ckpt.get("dataset_info", {}) or {}
    if saved and saved.get("num_classes") != info.num_classes:
        raise TinysetError(
            f"checkpoint {path} was trained for {saved.get('num_classes')} classes, dataset {info.name} has {info.num_classes}"
        )
    if saved.get("shape") and tuple(saved["shape"]) != tuple(info.shape):
        raise TinysetError(
            f"checkpoint {path} was trained on inputs of shape {tuple(saved['shape'])} ({saved.get('name')}), "
            f"dataset {info.name} has {tuple(info.shape)}; use a teacher trained on this data")
    model = get_model(ckpt["model"], info)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise TinysetError(f"checkpoint {path} does not fit model {ckpt['model']!r}: {_first_line(e)}") from None
    return model, ckpt
