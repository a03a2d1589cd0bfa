"""Operators: import an image as a NeAR asset, generate training data, batch rendering."""

from __future__ import annotations

import bpy

from .generate_data import NEAR_OT_generate_training_data, menu_func

classes: tuple[type, ...] = (NEAR_OT_generate_training_data,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_render.append(menu_func)


def unregister() -> None:
    bpy.types.TOPBAR_MT_render.remove(menu_func)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
