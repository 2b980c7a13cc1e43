"""Model registry: ConvNet-D, ResNet-18 (CIFAR and ImageNet stems), MLP, any torchvision model."""
from .checkpoint import atomic_torch_save, load_model, read_checkpoint, save_model, save_model_safetensors, sha256_file
from .registry import MODELS, NormalizedModel, get_model, list_models, parse_model_name, register_model

__all__ = [
    "MODELS", "NormalizedModel", "get_model", "list_models", "parse_model_name", "register_model",
    "atomic_torch_save", "load_model", "read_checkpoint", "save_model", "save_model_safetensors", "sha256_file",
]
