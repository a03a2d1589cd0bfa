"""Model class registry: checkpoint ``{"name": ..., "args": {...}}`` -> an ``nn.Module`` class.

``@register_model("OurName", "PublishedName", ...)`` registers a class under its names (the first
is the canonical name written by ``save_pretrained``) and records, on every instance, the
constructor arguments it was built with (``model.near_config``), so any registered model can be
saved and rebuilt without per-class boilerplate. Registration is open: stage-2 modules register
``SLatGaussianDecoder``, ``Hdri_Encoder``, ... when imported; :func:`get_model_class` imports the
known model modules lazily before giving up.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from .. import NearError

T = TypeVar("T", bound=type[nn.Module])

_REGISTRY: dict[str, type[nn.Module]] = {}

# Modules (under near_blender.models) that register classes when imported. Missing ones (not yet
# implemented in this version) are skipped silently.
MODEL_MODULES: tuple[str, ...] = (
    "slat_flow",
    "homogenizer",
    "image_encoder",
    "decoders",
    "intrinsic_decoder",
    "lighting_decoder",
    "lighting_tokenizer",
    "radiance_mlp",
)
_imported = False


def register_model(name: str, *aliases: str) -> Callable[[T], T]:
    """Class decorator: register under ``name`` (canonical) and ``aliases`` (e.g. published names)."""

    def deco(cls: T) -> T:
        for n in (name, *aliases):
            prev = _REGISTRY.get(n)
            if prev is not None and prev is not cls and prev.__qualname__ != cls.__qualname__:
                raise NearError(
                    f"Model name {n!r} is already registered to {prev.__module__}.{prev.__qualname__}."
                )
            _REGISTRY[n] = cls
        cls.near_name = name  # type: ignore[attr-defined]
        _record_init_args(cls)
        return cls

    return deco


def _record_init_args(cls: type[nn.Module]) -> None:
    """Wrap ``cls.__init__`` so instances remember their (outermost) constructor arguments."""
    orig = cls.__dict__.get("__init__")
    if orig is None or getattr(orig, "_near_wrapped", False):
        return
    sig = inspect.signature(orig)

    @functools.wraps(orig)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        orig(self, *args, **kwargs)
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        named = dict(bound.arguments)
        named.pop("self", None)
        # A subclass forwarding *args / **kwargs to a registered parent: start from what the
        # parent's (inner) wrapper recorded, which binds those by name, then add our own.
        inner = getattr(self, "near_config", None)
        params = dict(inner["args"]) if inner else {}
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                params.update(named.pop(p.name, {}))
            elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                named.pop(p.name, None)
        params.update(named)
        # The outermost __init__ finishes last, so its view wins.
        object.__setattr__(self, "near_config", {"name": type(self).near_name, "args": params})

    __init__._near_wrapped = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def _import_model_modules() -> None:
    global _imported
    if _imported:
        return
    _imported = True
    for mod in MODEL_MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{mod}":
                raise


def get_model_class(name: str) -> type[nn.Module]:
    """The class registered under ``name`` (ours or a published alias); NearError if unknown."""
    if name not in _REGISTRY:
        _import_model_modules()
    if name not in _REGISTRY:
        raise NearError(
            f"Unknown model class {name!r}. Known model classes: {', '.join(sorted(_REGISTRY))}. "
            "The checkpoint may need a newer near-blender, or the module registering this class "
            "was not imported."
        )
    return _REGISTRY[name]


def known_models() -> list[str]:
    """All registered names (after importing the built-in model modules)."""
    _import_model_modules()
    return sorted(_REGISTRY)


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"name", "args"}`` of a registered model instance (a deep copy safe to edit)."""
    cfg = getattr(model, "near_config", None)
    if cfg is None:
        raise NearError(
            f"{type(model).__name__} is not a registered model (decorate its class with @register_model) "
            "so it cannot be saved in the {name, args} format."
        )
    import copy

    return copy.deepcopy(cfg)
