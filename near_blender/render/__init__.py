"""Rendering core: cameras, environment maps, EXR IO, rasterization, tone mapping, conditioning.

Imports are lazy where they pull heavy dependencies, so ``near_blender.render.camera`` and
``near_blender.render.envmap`` stay usable with numpy alone: ``from near_blender.render import
rasterize`` imports torch only when asked for.
"""

from __future__ import annotations

from typing import Any

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "rasterize": "rasterize",
    "CompositeConfig": "_composite",
    "tonemap": "tonemap",
    "agx": "tonemap",
    "standard": "tonemap",
    "log_transform": "tonemap",
    "EnvConditioning": "conditioning",
    "ConditioningMaps": "conditioning",
    "environment_conditioning": "conditioning",
    "downsample_equirect": "irradiance",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    # Importing the submodule ``rasterize`` binds the *module* under that name; bind the function.
    globals()[name] = value
    return value
