"""User interface: the NeAR engine in Blender's standard render panels, its own panels, preferences."""

from __future__ import annotations

import bpy

from . import panels, preferences

ENGINE_ID = "NEAR"

# Standard panels that make no sense for a neural renderer (as Cycles excludes some).
_EXCLUDED_PANELS = {
    "RENDER_PT_eevee_next_sampling",
    "DATA_PT_light",
    "DATA_PT_EEVEE_light",
    "MATERIAL_PT_preview",
    "RENDER_PT_simplify",
}


def compatible_panels() -> list[type]:
    """Blender's own panels tagged for the built-in engines that NeAR reuses (camera, output,
    format, colour management, world, ...)."""
    panels = []
    for panel in bpy.types.Panel.__subclasses__():
        engines = getattr(panel, "COMPAT_ENGINES", None)
        if engines is not None and "BLENDER_RENDER" in engines and panel.__name__ not in _EXCLUDED_PANELS:
            panels.append(panel)
    return panels


def register() -> None:
    for cls in (*preferences.classes, *panels.classes):
        bpy.utils.register_class(cls)
    for panel in compatible_panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)


def unregister() -> None:
    for cls in reversed((*preferences.classes, *panels.classes)):
        bpy.utils.unregister_class(cls)
    for panel in bpy.types.Panel.__subclasses__():
        engines = getattr(panel, "COMPAT_ENGINES", None)
        if engines is not None:
            engines.discard(ENGINE_ID)
