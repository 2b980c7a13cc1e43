"""How the artifacts in this folder were written: by tinyset's quantizers as of commit 6e6b20c,
BEFORE quantizer configs recorded ``grid`` / ``ste`` / ``ties``. They pin backward compatibility: an artifact
written then must decode exactly as it did, and its rebuilt quantizer must re-encode the same
inputs (ties included) to the same codes. Do not regenerate them with a newer tinyset; that
would write configs with the new keys and test nothing.

Each case stores a format-2 ``quantized`` artifact in ``<case>/`` (identity space, no clamp, so
the decoded images are the quantizer's values) and ``expected.safetensors`` holds, per case, the
inputs ``<case>.x``, the codes ``<case>.codes`` and the decoded values ``<case>.decoded`` that
the old code produced. Run from the repository root: ``python tests/golden_quant/make_legacy.py``."""
from pathlib import Path

import safetensors.torch
import torch

from tinyset.artifact import load_artifact, quantized_components, save_artifact
from tinyset.quant import build_quantizer
from tinyset.quant.space import DataSpace

HERE = Path(__file__).parent

# values on the old grids' ties (and clip edges) so the old tie rules are pinned too
CASES = {
    # signed uniform, old mid-rise grid: alpha 1.5, 2 bits -> levels {-1.5, -0.5, 0.5, 1.5}, step 1;
    # x = -1, 0, 1 are ties (u = 0.5, 1.5, 2.5 rounded half to even on the code index)
    "uniform_s2": ("uniform", 2, "tensor", True, {"alpha": [1.5]},
                   [-1.0, 0.0, 1.0, -0.25, 0.7, 2.0, -3.0, 1.2, -0.5, 0.5, 1.5, -1.5]),
    # signed uniform 3 bits, per channel alphas 3.5 and 7: steps 1 and 2
    "uniform_s3_channel": ("uniform", 3, "channel", True, {"alpha": [3.5, 7.0]},
                           [[-3.0, -2.0, 0.0, 0.5, 1.0, 4.0], [-6.0, -4.0, 0.0, 1.0, 2.0, 9.0]]),
    # unsigned uniform 3 bits, per image lo/hi: [0, 7] (step 1) and [-1, 6] (step 1)
    "uniform_u3_image": ("uniform", 3, "image", False, {"lo": [0.0, -1.0], "hi": [7.0, 6.0]},
                         [[0.5, 1.5, 2.5, 3.2, -0.4, 7.5], [-0.5, 0.5, 1.5, 2.5, 6.5, 3.0]]),
    # signed APoT 3 bits, alpha 2: levels 2 * {0, +-1/4, +-1/2, +-1}; ties at u = +-1/8, +-3/8, +-3/4
    "apot_s3": ("apot", 3, "tensor", True, {"alpha": [2.0]},
                [0.25, -0.25, 0.75, -0.75, 1.5, -1.5, 0.6, -2.5, 3.0, 0.0, 1.1, -0.9]),
    # unsigned APoT 4 bits, alpha 1: levels {0,1,2,3,4,6,8,9,12,16,18,24,32,33,36,48}/48
    "apot_u4": ("apot", 4, "tensor", False, {"alpha": [1.0]},
                [0.5 / 48, 7 / 48, 40 / 48, 0.3, -0.2, 1.4, 0.95, 0.02]),
}


def main() -> None:
    if "ste" in build_quantizer("uniform", 2).config():
        raise SystemExit("this tinyset records quantizer conventions; these files must stay as the older one wrote them")
    expected = {}
    for case, (name, bits, gran, signed, state, values) in CASES.items():
        x = torch.tensor(values, dtype=torch.float32)
        x = x.reshape(2, -1, 1, 1) if x.dim() == 2 else x.reshape(-1, 1, 1, 1)
        if gran == "channel":
            x = x.reshape(2, 6).T.reshape(6, 2, 1, 1).contiguous()  # rows were per channel
        q = build_quantizer(name, bits, gran, signed=signed).init_from(x)
        q.load_state({k: torch.tensor(v).reshape(getattr(q, k).shape) for k, v in state.items()}, x.shape)
        y = torch.arange(x.shape[0]) % 2
        comps, bitmap, roles, cfg = quantized_components(x, y, q, num_classes=2, space=DataSpace())
        out = save_artifact(HERE / case, comps, {"dataset": "golden", "bits": bitmap}, decoder="quantized",
                            decoder_config=cfg, roles=roles, overwrite=True)
        with torch.no_grad():
            decoded = load_artifact(out).images
            assert torch.equal(decoded, q(x))
        expected[f"{case}.x"] = x
        expected[f"{case}.codes"] = q.encode(x).to(torch.uint8)
        expected[f"{case}.decoded"] = decoded.contiguous()
        print(case, cfg["quantizer"], decoded.flatten().tolist())
    safetensors.torch.save_file(expected, str(HERE / "expected.safetensors"))


if __name__ == "__main__":
    main()
