"""Format-2 artifacts: components with roles, registered decoders, honest bytes, v1 still loads."""
import json
import struct

import pytest
import safetensors.torch
import torch

from tinyset.artifact import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    TENSORS_FILE,
    Decoder,
    get_decoder,
    load_artifact,
    quantized_components,
    register_decoder,
    save_artifact,
)
from tinyset.artifact.decoders import label_bits
from tinyset.config import EvalConfig
from tinyset.errors import TinysetError
from tinyset.eval.protocol import evaluate_set
from tinyset.quant import build_quantizer
from tinyset.quant.space import DataSpace
from tinyset.utils.files import sha256_file


def _payload_bytes(path):
    """Bytes of tensor data in a safetensors file: file size - 8-byte length - JSON header."""
    raw = (path / TENSORS_FILE).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    return len(raw) - 8 - header_len


def test_pixels_v2_manifest(tmp_path):
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    out = save_artifact(tmp_path / "a", {"images": x, "labels": y}, {"dataset": "toy"}, preview=x)
    m = json.loads((out / MANIFEST_FILE).read_text())
    assert m["format_version"] == FORMAT_VERSION == 2
    assert m["decoder"] == {"name": "pixels", "config": {}}
    assert m["components"]["images"]["role"] == "data" and m["components"]["labels"]["role"] == "labels"
    assert m["total_bytes"] == _payload_bytes(out) == 6 * 3 * 64 * 4 + 6 * 8
    art = load_artifact(out)
    assert torch.equal(art.images, x) and torch.equal(art.labels, y)


@pytest.mark.parametrize("name,bits,gran", [("uniform", 3, "channel"), ("apot", 2, "tensor"), ("codebook", 4, "image"), ("uniform", 8, "tensor")])
def test_quantized_round_trip_is_the_forward_pass(tmp_path, name, bits, gran):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 8, 8, generator=g)
    y = torch.arange(10) % 5
    space = DataSpace(mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.3], clamp=[0, 1]) if name == "apot" else DataSpace(clamp=[0, 1])
    latent = space.from_data(x)
    q = build_quantizer(name, bits, gran).init_from(latent)
    with torch.no_grad():
        trained_on = space.to_data(q(latent))
    comps, bitmap, roles, cfg = quantized_components(latent, y, q, num_classes=5, space=space)
    out = save_artifact(tmp_path / "q", comps, {"dataset": "toy", "bits": bitmap}, preview="decoded",
                        decoder="quantized", decoder_config=cfg, roles=roles)
    art = load_artifact(out)
    assert torch.equal(art.images, trained_on)  # bit for bit what the loop's forward pass saw
    assert torch.equal(art.labels, y)
    m = art.manifest
    assert m["total_bytes"] == _payload_bytes(out) == sum(c["bytes"] for c in m["components"].values())
    assert m["components"]["codes"]["bits"] == bits and m["components"]["codes"]["bytes"] == (x.numel() * bits + 7) // 8
    assert m["components"]["labels"]["bytes"] == (10 * label_bits(5) + 7) // 8
    assert m["total_bytes"] == q.cost_bytes(x.shape) + m["components"]["labels"]["bytes"]
    assert {c["role"] for c in m["components"].values()} == {"codes", "quantizer", "labels"}
    assert (out / "preview.png").is_file()


def _write_v1(path, images, labels):
    """An artifact exactly as format 1 wrote it (no decoder, no roles)."""
    path.mkdir()
    tensors = {"images": images, "labels": labels}
    safetensors.torch.save_file(tensors, str(path / TENSORS_FILE), metadata={"format": "tinyset-artifact", "format_version": "1"})
    comps = {k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "bits": t.element_size() * 8,
                 "bytes": t.numel() * t.element_size()} for k, t in tensors.items()}
    manifest = {"format_version": 1, "dataset": "digits", "method": "random", "ipc": 2, "seed": 0, "components": comps,
                "total_bytes": sum(c["bytes"] for c in comps.values()), "checksums": {TENSORS_FILE: sha256_file(path / TENSORS_FILE)}}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    return path


def test_v1_artifact_loads_and_evaluates(tmp_path, digits):
    idx = torch.cat([digits.train.class_indices(c)[:2] for c in range(10)])
    x, y = digits.train.get_batch(idx)
    art = load_artifact(_write_v1(tmp_path / "v1", x, y))
    assert art.decoder["name"] == "pixels" and torch.equal(art.images, x) and torch.equal(art.labels, y)
    ecfg = EvalConfig(student="convnet:depth=2,width=8", epochs=2, seeds=1, label_modes=("hard",), random_baseline=False, cutmix=0.0)
    report = evaluate_set(art.images, art.labels, digits, None, ecfg, "cpu", progress=False)
    assert 0.0 <= report["rows"][0]["accuracy_mean"] <= 100.0


def test_registered_decoder_and_errors(tmp_path):
    @register_decoder("test_scaled")
    class Scaled(Decoder):
        def decode(self, components, config):
            self.require(components, "base", "labels")
            return {"images": components["base"] * float(config["scale"]), "labels": components["labels"]}

    base = torch.rand(2, 1, 4, 4) / 2
    out = save_artifact(tmp_path / "s", {"base": base, "labels": torch.tensor([0, 1])}, {}, decoder="test_scaled",
                        decoder_config={"scale": 2.0}, roles={"base": "data"})
    assert torch.equal(load_artifact(out).images, base * 2.0)
    assert isinstance(get_decoder("pixels"), Decoder)
    with pytest.raises(TinysetError, match="unknown decoder 'nope'"):
        save_artifact(tmp_path / "n", {"images": base}, {}, decoder="nope")
    with pytest.raises(TinysetError, match="needs components base"):
        save_artifact(tmp_path / "m", {"images": base, "labels": torch.tensor([0, 1])}, {}, decoder="test_scaled", decoder_config={"scale": 1})
    assert not (tmp_path / "n").exists() and not (tmp_path / "m").exists()
