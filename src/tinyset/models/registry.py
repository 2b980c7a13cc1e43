"""Typed, discoverable model names (torchvision's ``get_model`` style).

``get_model("convnet3", info)`` builds a network for a dataset and wraps it in ``NormalizedModel``
so it takes [0, 1] pixels. Arguments ride in the name: ``convnet:depth=4,width=64,norm=instance``.
Any ``torchvision.models`` name also works (``tv:resnet50`` or plain ``resnet50``), without weights
unless the user has them locally (nothing downloads)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import yaml
from torch import nn

from ..data.base import DatasetInfo
from ..errors import TinysetError
from ..registry import Registry
from .convnet import ConvNet
from .mlp import MLP, flat_features
from .resnet import resnet18_cifar, resnet18_imagenet

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, doc: str | None = None):
    return MODELS.register(name, doc)


class NormalizedModel(nn.Module):
    """Normalises [0, 1] inputs with the dataset's own mean/std before the network, so synthetic
    pixels live in image space (clamp to [0, 1], export to PNG) whatever the dataset."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], image: bool = True):
        super().__init__()
        self.net = net
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _convnet(depth: int | None = None):
    def build(info: DatasetInfo, depth: int = depth or 3, width: int = 128, norm: str = "batch") -> nn.Module:
        return ConvNet(info.channels, info.num_classes, info.image_size, depth=int(depth), width=int(width), norm=norm)

    return build


register_model("convnet", "ConvNet-D (args: depth=3, width=128, norm=batch|instance|none)")(_convnet())
for _d in (1, 2, 3, 4, 5):
    register_model(f"convnet{_d}", f"ConvNet-{_d}, width 128, BatchNorm (args: width, norm)")(_convnet(_d))
register_model("convnet3_in", "ConvNet-3 with instance norm (the classic DD student)")(
    lambda info, width=128: ConvNet(info.channels, info.num_classes, info.image_size, 3, int(width), "instance")
)
register_model("resnet18_cifar", "ResNet-18 with a CIFAR stem (3x3 conv, no max-pool)")(
    lambda info: resnet18_cifar(info.channels, info.num_classes)
)
register_model("resnet18", "ResNet-18 with torchvision's ImageNet stem (7x7/2 conv + max-pool)")(
    lambda info: resnet18_imagenet(info.channels, info.num_classes)
)
register_model("mlp", "MLP for vector data (args: hidden=256, depth=2)")(
    lambda info, hidden=256, depth=2: MLP(flat_features(info.shape), info.num_classes, int(hidden), int(depth))
)


def parse_model_name(spec: str) -> tuple[str, dict[str, Any]]:
    """``convnet:depth=4,width=64`` -> ("convnet", {"depth": 4, "width": 64})."""
    name, _, argtext = spec.partition(":")
    if name == "tv":  # tv:<torchvision name>
        return spec, {}
    args: dict[str, Any] = {}
    for part in filter(None, argtext.split(",")):
        if "=" not in part:
            raise TinysetError(f"model argument {part!r} in {spec!r} must look like key=value")
        k, v = part.split("=", 1)
        args[k.strip()] = yaml.safe_load(v)
    return name, args


def _torchvision_model(name: str, info: DatasetInfo) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        known = ", ".join(MODELS.names())
        raise TinysetError(f"unknown model {name!r}: not a tinyset model ({known}) nor a torchvision.models name")
    return torchvision.models.get_model(name, weights=None, num_classes=info.num_classes)


def get_model(spec: str, info: DatasetInfo, normalize: bool = True) -> nn.Module:
    """Build a fresh (randomly initialised) model for ``info`` from a name."""
    name, args = parse_model_name(spec)
    if name.startswith("tv:"):
        net = _torchvision_model(name[3:], info)
    elif name in MODELS:
        try:
            net = MODELS.get(name)(info, **args)
        except TypeError as e:
            raise TinysetError(f"bad arguments for model {name!r}: {e}") from None
    else:
        net = _torchvision_model(name, info)
    if not normalize:
        return net
    return NormalizedModel(net, info.mean, info.std, image=info.kind == "image")


def list_models() -> list[tuple[str, str]]:
    return [(n, MODELS.describe(n)) for n in MODELS.names()] + [
        ("tv:<name>", "any torchvision.models name (random init; local weights via --teacher path.pt)")
    ]
