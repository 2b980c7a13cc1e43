"""ConvNet-D, the standard network of dataset-distillation papers: D blocks of
conv3x3(width) -> norm -> ReLU -> avgpool2, then one linear layer."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import TinysetError

NORMS = ("batch", "instance", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width)
    if kind == "instance":  # the DD papers' "instancenorm" is GroupNorm with one group per channel
        return nn.GroupNorm(width, width, affine=True)
    if kind == "none":
        return nn.Identity()
    raise TinysetError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


class ConvNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, depth: int = 3, width: int = 128, norm: str = "batch"):
        super().__init__()
        if image_size >> depth < 1:
            raise TinysetError(f"convnet depth {depth} pools a {image_size}px image below one pixel; use a smaller depth")
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), _norm(norm, width), nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        side = image_size >> depth
        self.classifier = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
