"""Models: the SLAT flow (stage 1), its LoRA homogenizer, image encoders, sampler, registry and the
one checkpoint format (``{name, args}`` JSON + safetensors) with local / Hub resolution."""

from .checkpoint import build_model, from_pretrained, load_model, save_pretrained
from .registry import get_model_class, known_models, model_config, register_model

__all__ = [
    "get_model_class",
    "register_model",
    "known_models",
    "model_config",
    "from_pretrained",
    "save_pretrained",
    "load_model",
    "build_model",
]
