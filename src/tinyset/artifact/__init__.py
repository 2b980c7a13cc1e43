"""The distilled-set artifact: a versioned directory (manifest.json, tensors.safetensors,
preview.png) that every method writes and every consumer reads."""
from .decoders import DECODERS, Decoder, get_decoder, quantized_components, register_decoder
from .export import export_imagefolder, sanitize_class_name
from .format import (
    FORMAT_VERSION,
    LABEL_MODES,
    MANIFEST_FILE,
    PREVIEW_FILE,
    SOFT_FILE,
    TENSORS_FILE,
    Artifact,
    atomic_directory,
    decoder_of,
    load_artifact,
    read_set_file,
    save_artifact,
    sha256_file,
)
from .sizes import compression, teacher_bytes
from .preview import make_grid_image
from . import bases_decoder  # noqa: E402,F401  (registers the "bases" decoder of boosted SSDD)
from .store import save_quantized_set

__all__ = [
    "DECODERS",
    "Decoder",
    "decoder_of",
    "get_decoder",
    "quantized_components",
    "register_decoder",
    "save_quantized_set",
    "FORMAT_VERSION",
    "LABEL_MODES",
    "MANIFEST_FILE",
    "SOFT_FILE",
    "read_set_file",
    "teacher_bytes",
    "compression",
    "TENSORS_FILE",
    "PREVIEW_FILE",
    "Artifact",
    "save_artifact",
    "load_artifact",
    "sha256_file",
    "atomic_directory",
    "make_grid_image",
    "export_imagefolder",
    "sanitize_class_name",
]
