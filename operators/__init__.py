"""Operators: fit the camera to a photo, import an image as a NeAR asset, pack/unpack its LH-SLAT,
export it (3D Gaussians) or bake its PBR textures onto a mesh, generate training data."""

from __future__ import annotations

import bpy

from . import bake_pbr, export_ply, fit_camera, import_image, lhslat
from .generate_data import NEAR_OT_generate_training_data, menu_func

classes: tuple[type, ...] = (
    NEAR_OT_generate_training_data, *import_image.classes, *fit_camera.classes, *lhslat.classes,
    *export_ply.classes, *bake_pbr.classes,
)  # fmt: skip
MENUS = (
    (bpy.types.TOPBAR_MT_render, menu_func),
    *import_image.MENUS,
    *fit_camera.MENUS,
    *lhslat.MENUS,
    *export_ply.MENUS,
)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    for menu, fn in MENUS:
        menu.append(fn)


def unregister() -> None:
    for menu, fn in reversed(MENUS):
        menu.remove(fn)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
