"""Blender properties of the NeAR engine: per-object asset data, per-scene render settings and
per-view-layer passes.

Large per-asset data (the LH-SLAT) lives in a sidecar ``.npz`` next to the .blend, referenced by a
(relative) path here; only small settings are stored inside the .blend, unless the user packs the
sidecar into it (``packed``, see ``engine/assets.py``).
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty


class NearAssetProperties(bpy.types.PropertyGroup):
    """Marks an object as a NeAR asset. The object's transform places the canonical asset box
    [-0.5, 0.5]^3 (Z up) in the scene."""

    is_asset: BoolProperty(name="NeAR Asset", default=False)  # type: ignore[valid-type]
    sidecar: StringProperty(  # type: ignore[valid-type]
        name="LH-SLAT",
        description="Sidecar .npz holding the asset's Lighting-Homogenized SLAT (relative to the .blend)",
        subtype="FILE_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    source_image: StringProperty(  # type: ignore[valid-type]
        name="Source Image", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"}
    )
    model_id: StringProperty(  # type: ignore[valid-type]
        name="Model", description="Model that produced the LH-SLAT (for reproducibility)"
    )
    packed: PointerProperty(  # type: ignore[valid-type]
        type=bpy.types.Text,
        name="Packed LH-SLAT",
        description="The LH-SLAT packed into the .blend (used instead of the sidecar file)",
    )


class NearSceneProperties(bpy.types.PropertyGroup):
    """Render settings of the NeAR engine (Render Properties > NeAR)."""

    antialiased: BoolProperty(  # type: ignore[valid-type]
        name="Anti-aliased Splats",
        description="gsplat's antialiased mode (opacity compensated for the screen-space blur)",
        default=False,
    )
    background_strength: FloatProperty(  # type: ignore[valid-type]
        name="Background Strength",
        description="Multiplier of the world seen directly by the camera (lighting is unaffected)",
        default=1.0,
        min=0.0,
    )
    preview_scale: EnumProperty(  # type: ignore[valid-type]
        name="Viewport Resolution",
        items=[("1", "Full", ""), ("2", "1/2", ""), ("4", "1/4", "")],
        default="2",
    )


def _pass_toggle(name: str) -> BoolProperty:  # type: ignore[valid-type]
    return BoolProperty(  # type: ignore[return-value]
        name=name, default=True,
        description=f"Write the {name} pass (off: Blender allocates no buffer for it; saves memory on big frames)",
    )  # fmt: skip


class NearViewLayerProperties(bpy.types.PropertyGroup):
    """View Layer Properties > Passes > NeAR: which of the engine's passes a render writes
    (Combined always). Property ``use_<key>`` per pass of :data:`near_blender.render.passes.EXTRA_PASSES`."""

    use_depth: _pass_toggle("Depth")  # type: ignore[valid-type]
    use_alpha: _pass_toggle("Alpha")  # type: ignore[valid-type]
    use_base_color: _pass_toggle("Base Color")  # type: ignore[valid-type]
    use_roughness: _pass_toggle("Roughness")  # type: ignore[valid-type]
    use_metallic: _pass_toggle("Metallic")  # type: ignore[valid-type]
    use_shadow: _pass_toggle("Shadow")  # type: ignore[valid-type]
    use_normal: _pass_toggle("Normal")  # type: ignore[valid-type]


def enabled_passes(view_layer: object) -> tuple:
    """The extra passes (``PassSpec``) ``view_layer`` writes; all of them without settings."""
    from .passes import EXTRA_PASSES

    settings = getattr(view_layer, "near_passes", None)
    return tuple(p for p in EXTRA_PASSES if settings is None or getattr(settings, f"use_{p.key}", True))


classes = (NearAssetProperties, NearSceneProperties, NearViewLayerProperties)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.near_asset = PointerProperty(type=NearAssetProperties)
    bpy.types.Scene.near = PointerProperty(type=NearSceneProperties)
    bpy.types.ViewLayer.near_passes = PointerProperty(type=NearViewLayerProperties)


def unregister() -> None:
    del bpy.types.ViewLayer.near_passes
    del bpy.types.Scene.near
    del bpy.types.Object.near_asset
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
