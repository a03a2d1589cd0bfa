"""Helpers for tests that drive real Blender through the bpy module (one session per process).

``import bpy`` takes ~1 s and EEVEE's first frame compiles shaders for ~1 min, so test modules share
the process-wide session and reset the scene with :func:`empty_scene` instead of restarting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

REPO = Path(__file__).resolve().parents[1]
ADDON_MODULE = (
    "near_addon"  # the repo root imported as a package (Blender names it bl_ext.<repo>.near_blender)
)


def empty_scene():
    """Reset Blender to factory settings with an empty scene; returns the scene."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def import_addon():
    """Import the repository root (the extension) as a package and return it (not registered)."""
    from near_blender.utils.extension_package import load_extension_package

    return load_extension_package(REPO, ADDON_MODULE)


def studio_hdri(name: str = "forest") -> Path:
    """Path of one of Blender's bundled studio HDRIs (1024x512 EXR, CC0)."""
    return Path(bpy.utils.system_resource("DATAFILES")) / "studiolights" / "world" / f"{name}.exr"


def hdri_world(scene, name: str = "forest", rotation_deg: float = 0.0, strength: float = 1.0):
    """Light ``scene`` with a new World: Texture Coordinate (Generated) -> Mapping (named
    ``Mapping``, rotating ``rotation_deg`` about Z) -> Environment Texture (the studio HDRI ``name``)
    -> Background (``strength``). Returns the Mapping node (e.g. to key its rotation)."""
    import math

    scene.world = world = bpy.data.worlds.new("W")
    nt = world.node_tree
    tex = nt.nodes.new("ShaderNodeTexEnvironment")
    tex.image = bpy.data.images.load(str(studio_hdri(name)))
    coord, mapping = nt.nodes.new("ShaderNodeTexCoord"), nt.nodes.new("ShaderNodeMapping")
    mapping.name = "Mapping"
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(rotation_deg))
    nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    nt.links.new(tex.outputs["Color"], nt.nodes["Background"].inputs["Color"])
    nt.nodes["Background"].inputs["Strength"].default_value = strength
    return mapping


@contextlib.contextmanager
def addon_with_model(folder: str | None) -> Iterator[None]:
    """The add-on registered with ``$NEAR_MODEL`` = ``folder`` (``None``: the bundled default
    model); the model cache is cleared on entry and exit and ``$NEAR_MODEL`` restored."""
    import os

    addon = import_addon()
    from near_addon.engine import model_manager

    old = os.environ.pop("NEAR_MODEL", None)
    if folder is not None:
        os.environ["NEAR_MODEL"] = str(folder)
    model_manager.clear()
    addon.register()
    try:
        yield
    finally:
        addon.unregister()
        model_manager.clear()
        os.environ.pop("NEAR_MODEL", None)
        if old is not None:
            os.environ["NEAR_MODEL"] = old
