"""The ``bases`` decoder: rebuilds boosted-SSDD pre-training pairs from stored components.

images  = rotate(upsample(image_coeff @ image_bases), view) for every predefined view (view-major)
targets = c_view @ repr_bases, where c_0 is stored and c_view is either stored too or predicted
          from c_0 by that view's tiny residual network (``approx``).
Without bases (``images`` and ``targets`` components: KRR-ST with views) the stored pixels and raw
targets take the places of the decoded images and of c_view @ repr_bases.
The images are clamped to [0, 1] only when the set was distilled with its pixels clamped in the
loop (``clamp`` in the config; artifacts older than that key were always clamped), so the decoded
images are exactly those the distillation optimised.
Registered with the parameterised artifact's decoder table; no labels: these pairs carry no classes."""
from __future__ import annotations

import torch

from ..errors import TinysetError
from ..param.view_nets import view_net_from_state
from ..param.bases import decode_images
from ..data.views import all_views
from .decoders import Decoder, register_decoder

def decode_bases(components: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    pixels = "image_bases" not in components and "images" in components
    if pixels:
        Decoder.require(components, "images", "targets")
    else:
        Decoder.require(components, "image_coeff", "image_bases", "repr_coeff", "repr_bases")
    views = tuple(int(v) for v in config.get("views", (0,)))
    with torch.no_grad():
        if pixels:
            img = components["images"].float()
        else:
            img = decode_images(components["image_coeff"].float(), components["image_bases"].float(),
                                tuple(config["low_shape"]), int(config["size"]))
        if config.get("clamp", True):
            img = img.clamp(0, 1)
        rc = (components["targets"] if pixels else components["repr_coeff"]).float()
        if config.get("approx"):
            coeffs = [rc[0]] + [view_net_from_state(components, f"view{j}")(rc[0]) for j in range(1, len(views))]
        else:
            if rc.shape[0] != len(views):
                raise TinysetError(f"bases decoder: {rc.shape[0]} stored views of coefficients, config names {len(views)}")
            coeffs = list(rc)
        targets = torch.cat(coeffs if pixels else [c @ components["repr_bases"].float() for c in coeffs])
        images = all_views(img, views)
    return {"images": images, "targets": targets}


@register_decoder("bases", "images = upsample(coeff @ image_bases) per rotation view; targets = coeff @ repr_bases (views from tiny networks)")
class BasesDecoder(Decoder):
    def decode(self, components, config):
        return decode_bases(components, config)
