"""Operators: import an image as a NeAR asset, generate training data, batch rendering."""

from __future__ import annotations

import bpy

classes: tuple[type, ...] = ()


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
