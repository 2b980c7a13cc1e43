"""ResNet-18 with the CIFAR stem (3x3 conv, no max-pool: keeps 32px images at full resolution
through the first stage) and with torchvision's ImageNet stem (7x7/2 conv + max-pool)."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18


def resnet18_imagenet(in_channels: int, num_classes: int) -> nn.Module:
    m = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return m


def resnet18_cifar(in_channels: int, num_classes: int) -> nn.Module:
    m = resnet18(weights=None, num_classes=num_classes)
    m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m
