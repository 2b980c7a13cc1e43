"""ImageNet-pretrained torchvision teachers, restricted to a dataset's classes.

Users of the ImageNet recipes (SRe2L, RDED, E2D) start from torchvision's pretrained ResNet-18.
``pretrained_teacher("tv:resnet18", info, "DEFAULT")`` resolves the weights through torchvision's
weights enums (``ResNet18_Weights.DEFAULT``; this is the one place tinyset may download, and only
when a user asks for it), or takes a local ``state_dict`` file (``.pt``/``.pth`` loaded with
``weights_only=True``, or ``.safetensors``) in torchvision's layout, which is what tests use.

A dataset of ImageNet classes (Imagenette's ``classes.tsv``; see ``data.imagefolder``) keeps only
its classes' rows of the 1000-way head, in the dataset's class order, so the teacher's logits are
exactly the full model's logits at those indices. Inputs are normalised with the weights' own
mean/std (ImageNet's), not the dataset's: that is what the pretrained network was trained on."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..data.base import DatasetInfo
from ..errors import TinysetError
from .registry import NormalizedModel

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _arch(spec: str) -> str:
    return spec[3:] if spec.startswith("tv:") else spec


def _final_linear(net: nn.Module) -> tuple[nn.Module, str]:
    """The classification layer and its attribute name on its parent (fc, classifier[-1], heads.head)."""
    for parent_name in ("", "classifier", "heads"):
        parent = net.get_submodule(parent_name) if parent_name else net
        for child in ("fc", "head", "-1"):
            if child == "-1" and isinstance(parent, nn.Sequential) and isinstance(parent[-1], nn.Linear):
                return parent, str(len(parent) - 1)
            if child != "-1" and isinstance(getattr(parent, child, None), nn.Linear):
                return parent, child
    raise TinysetError(f"cannot find the classification layer of {type(net).__name__} to restrict its classes")


def restrict_head(net: nn.Module, class_indices: Sequence[int]) -> nn.Module:
    """Keep the rows ``class_indices`` (in that order) of the final Linear layer."""
    parent, attr = _final_linear(net)
    old: nn.Linear = parent[int(attr)] if attr.isdigit() else getattr(parent, attr)
    idx = torch.as_tensor(list(class_indices), dtype=torch.long)
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= old.out_features:
        raise TinysetError(f"class indices {list(class_indices)} out of range for a {old.out_features}-way head")
    new = nn.Linear(old.in_features, len(idx), bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(old.weight[idx])
        if old.bias is not None:
            new.bias.copy_(old.bias[idx])
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    return net


def _state_dict(weights: str, arch: str) -> tuple[dict, tuple, tuple, str]:
    """(state_dict, mean, std, description) for a weights name or a local file."""
    path = Path(weights).expanduser()
    if path.suffix in (".pt", ".pth", ".safetensors") or path.exists():
        if not path.exists():
            raise TinysetError(f"pretrained weights file {path} not found")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file to the user
                raise TinysetError(f"pretrained weights {path} could not be read as a state_dict ({type(e).__name__})") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise TinysetError(f"pretrained weights {path} is not a state_dict of tensors")
        return sd, IMAGENET_MEAN, IMAGENET_STD, str(path)
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise TinysetError(f"torchvision has no pretrained weights for {arch!r}") from None
    try:
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise TinysetError(f"unknown weights {weights!r} for {arch}; choose DEFAULT or one of {', '.join(enum.__members__)}") from None
    t = w.transforms()
    log.info("pretrained teacher: %s (torchvision downloads it once into its own cache)", w)
    return w.get_state_dict(progress=False), tuple(t.mean), tuple(t.std), str(w)


def pretrained_teacher(spec: str, info: DatasetInfo, weights: str = "DEFAULT",
                       class_indices: Sequence[int] | None = None) -> tuple[nn.Module, dict]:
    """A pretrained torchvision model for ``info``, head restricted to ``class_indices`` (default:
    the dataset's ``imagenet_indices`` when it has fewer classes than the head)."""
    import torchvision

    arch = _arch(spec)
    if arch not in torchvision.models.list_models():
        raise TinysetError(f"unknown torchvision model {arch!r} for a pretrained teacher")
    sd, mean, std, source = _state_dict(weights, arch)
    net = torchvision.models.get_model(arch, weights=None)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise TinysetError(f"pretrained weights {source} do not fit {arch}: {str(e).splitlines()[0]}") from None
    head = _final_linear(net)
    out_features = (head[0][int(head[1])] if head[1].isdigit() else getattr(*head)).out_features
    if class_indices is None and info.num_classes != out_features:
        class_indices = info.extra.get("imagenet_indices")
        if class_indices is None:
            raise TinysetError(f"{info.name} has {info.num_classes} classes and the pretrained head {out_features}; "
                               "give the ImageNet index of each class (a classes.tsv in the folder, or teacher.head_classes)")
    if class_indices is not None:
        if len(class_indices) != info.num_classes:
            raise TinysetError(f"{len(class_indices)} head classes given for {info.num_classes} dataset classes")
        restrict_head(net, class_indices)
    ref = {"source": "pretrained", "weights": source, "model": spec,
           "head_classes": list(class_indices) if class_indices is not None else None, "mean": list(mean), "std": list(std)}
    return NormalizedModel(net, mean, std), ref
