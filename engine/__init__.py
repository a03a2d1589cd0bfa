"""The NeAR render engine: RenderEngine class, render/viewport sessions, scene bridge."""

from __future__ import annotations

import bpy

from . import properties, scene_bridge  # noqa: F401  (scene_bridge re-exported for operators/tests)
from .engine import NearRenderEngine

classes = (NearRenderEngine,)


def register() -> None:
    properties.register()
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    properties.unregister()
