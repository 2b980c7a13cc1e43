"""The distilled-set artifact: a versioned directory (manifest.json, tensors.safetensors,
preview.png) that every method writes and every consumer reads."""
from .export import export_imagefolder, sanitize_class_name
from .format import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    PREVIEW_FILE,
    TENSORS_FILE,
    Artifact,
    atomic_directory,
    load_artifact,
    save_artifact,
    sha256_file,
)
from .preview import make_grid_image

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
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
