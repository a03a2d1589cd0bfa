"""Properties-editor panels of the NeAR engine: Render Properties > NeAR (render settings and the
model in use), Object Properties > NeAR (a NeAR asset's LH-SLAT, source image and packing) and View
Layer Properties > NeAR Passes (which passes a render writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

from .preferences import ADDON_PACKAGE, get_preferences

ENGINE_ID = "NEAR"


def model_summary(prefs: Any) -> str:
    """One line naming the model F12 will use (``$NEAR_MODEL`` overrides the preferences)."""
    import os

    if os.environ.get("NEAR_MODEL"):
        return f"$NEAR_MODEL: {os.environ['NEAR_MODEL']}"
    if prefs is None or prefs.model_source == "BUNDLED":
        return "Bundled default model"
    if prefs.model_source == "FOLDER":
        return f"Folder: {prefs.model_folder or '(not set)'}"
    rev = f" @ {prefs.hub_revision}" if prefs.hub_revision else ""
    return f"Hub: {prefs.hub_repo}{rev}"


class NearPropertiesPanel:
    """Common settings of the NeAR panels in the Properties editor (as Cycles' ButtonsPanel)."""

    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_label = "NeAR"


class NearEnginePanel(NearPropertiesPanel):
    """A panel shown only while NeAR is the render engine."""

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.engine == ENGINE_ID


class RENDER_PT_near(NearEnginePanel, bpy.types.Panel):
    bl_context = "render"

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.use_property_split = True
        settings = context.scene.near
        col = layout.column()
        col.prop(settings, "antialiased")
        col.prop(settings, "background_strength")
        col.prop(settings, "preview_scale")
        prefs = get_preferences(context)
        box = layout.box()
        box.label(text=model_summary(prefs), icon="FILE_3D")
        if prefs is not None:
            box.label(text=f"Device: {prefs.device.title()}, precision: {prefs.precision.lower()}")
        box.operator(
            "preferences.addon_show", text="Model Settings", icon="PREFERENCES"
        ).module = ADDON_PACKAGE


class OBJECT_PT_near_asset(NearPropertiesPanel, bpy.types.Panel):
    bl_context = "object"

    @classmethod
    def poll(cls, context: Any) -> bool:
        obj = context.object
        return obj is not None and (obj.near_asset.is_asset or context.engine == ENGINE_ID)

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.use_property_split = True
        obj = context.object
        props = obj.near_asset
        layout.prop(props, "is_asset")
        if not props.is_asset:
            return
        col = layout.column()
        col.enabled = props.packed is None  # a packed asset renders from the .blend
        col.prop(props, "sidecar")
        row = layout.row()
        if props.packed is not None:
            row.label(text=f"Packed into the .blend ({props.packed.name})", icon="PACKAGE")
            row.operator("near.unpack_lhslat", text="Unpack", icon="UGLYPACKAGE")
        else:
            path = Path(bpy.path.abspath(props.sidecar, library=obj.library)) if props.sidecar else None
            if path is not None and path.is_file():
                row.label(text=f"{path.stat().st_size / 1e6:.1f} MB file", icon="FILE")
                row.operator("near.pack_lhslat", text="Pack", icon="PACKAGE")
            else:
                row.alert = True
                row.label(text="LH-SLAT file missing: fix the path or re-import", icon="ERROR")
        layout.prop(props, "source_image")
        if props.model_id:
            layout.label(text=f"Model: {props.model_id}")


class VIEWLAYER_PT_near_passes(NearEnginePanel, bpy.types.Panel):
    """View Layer Properties > NeAR Passes: which passes F12 writes (each costs 4 bytes per pixel
    and channel of Blender's render result)."""

    bl_context = "view_layer"
    bl_label = "NeAR Passes"

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.use_property_split = True
        settings = context.view_layer.near_passes
        col = layout.column(heading="Include")
        for name in ("depth", "alpha", "base_color", "roughness", "metallic", "shadow", "normal"):
            col.prop(settings, f"use_{name}")


classes = (RENDER_PT_near, OBJECT_PT_near_asset, VIEWLAYER_PT_near_passes)
