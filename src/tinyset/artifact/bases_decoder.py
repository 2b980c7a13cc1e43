"""The ``bases`` decoder: rebuilds boosted-SSDD pre-training pairs from stored components.

images  = rotate(upsample(image_coeff @ image_bases), view) for every predefined view (view-major)
targets = c_view @ repr_bases, where c_0 is stored and c_view is either stored too or predicted
          from c_0 by that view's tiny residual network (``approx``).
Written to the parameterised-artifact API (``Decoder.decode(components, config) -> {"images",
"labels", "targets"}``, registered by name); labels are -1: these pairs carry no classes."""
from __future__ import annotations

import torch

from ..errors import TinysetError
from ..methods.approx import view_net_from_state
from ..methods.bases import decode_images
from ..ssl.rotations import all_views

try:  # the shared decoder registry of the parameterised artifact (issue 13), when present
    from .decoders import register_decoder
except ImportError:  # pragma: no cover - until that lands, a local table with the same shape
    from ..registry import Registry

    DECODERS = Registry("decoder")

    def register_decoder(name: str, doc: str | None = None):
        return DECODERS.register(name, doc)


def decode_bases(components: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    need = ("image_coeff", "image_bases", "repr_coeff", "repr_bases")
    missing = [k for k in need if k not in components]
    if missing:
        raise TinysetError(f"bases decoder: artifact lacks components {', '.join(missing)}")
    views = tuple(int(v) for v in config.get("views", (0,)))
    with torch.no_grad():
        img = decode_images(components["image_coeff"].float(), components["image_bases"].float(),
                            tuple(config["low_shape"]), int(config["size"])).clamp(0, 1)
        rc = components["repr_coeff"].float()
        if config.get("approx"):
            coeffs = [rc[0]] + [view_net_from_state(components, f"view{j}")(rc[0]) for j in range(1, len(views))]
        else:
            if rc.shape[0] != len(views):
                raise TinysetError(f"bases decoder: {rc.shape[0]} stored views of coefficients, config names {len(views)}")
            coeffs = list(rc)
        targets = torch.cat([c @ components["repr_bases"].float() for c in coeffs])
        images = all_views(img, views)
    return {"images": images, "labels": torch.full((len(images),), -1, dtype=torch.long), "targets": targets}


@register_decoder("bases")
class BasesDecoder:
    """images = upsample(coeff @ image_bases) per rotation view; targets = coeff @ repr_bases (view coefficients from tiny networks)."""

    @staticmethod
    def decode(components: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
        return decode_bases(components, config)
