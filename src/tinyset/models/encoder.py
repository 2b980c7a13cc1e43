"""An encoder is a tinyset model whose last linear layer is removed: its output is the flattened
penultimate representation (ConvNet-3 width 32 on 32px: 32*4*4 = 512; ResNet-18: 512)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import TinysetError


def _head_owner(model: nn.Module) -> tuple[nn.Module, str]:
    net = getattr(model, "net", model)  # NormalizedModel wraps the network
    for name in ("classifier", "fc", "head"):
        if isinstance(getattr(net, name, None), nn.Linear):
            return net, name
    raise TinysetError(f"cannot find the last linear layer of {type(net).__name__} (looked for classifier, fc, head)")


def encoder_from_model(model: nn.Module) -> nn.Module:
    """The same module with its last linear layer replaced by Identity (in place)."""
    owner, name = _head_owner(model)
    setattr(owner, name, nn.Identity())
    return model


def head_in_features(model: nn.Module) -> int:
    owner, name = _head_owner(model)
    return getattr(owner, name).in_features


@torch.no_grad()
def feature_dim(encoder: nn.Module, shape: tuple[int, ...]) -> int:
    was = encoder.training
    encoder.eval()
    d = encoder(torch.zeros(2, *shape, device=next(encoder.parameters()).device)).shape[1]
    encoder.train(was)
    return int(d)
