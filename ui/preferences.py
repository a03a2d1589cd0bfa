"""Add-on preferences: which NeAR model to use, on which device, at which precision."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

ADDON_PACKAGE = __package__.rpartition(".")[0]  # the extension's root package


class NearPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    model_source: EnumProperty(  # type: ignore[valid-type]
        name="Model",
        items=[
            ("BUNDLED", "Bundled Default", "The small CPU model that ships with the extension"),
            ("FOLDER", "Local Folder", "A pipeline folder (pipeline.json / pipeline.yaml + models)"),
            ("HUB", "Hugging Face Hub", "A Hub repository id, e.g. luh0502/NeAR (downloaded once)"),
        ],
        default="BUNDLED",
    )
    model_folder: StringProperty(name="Folder", subtype="DIR_PATH")  # type: ignore[valid-type]
    hub_repo: StringProperty(name="Repository", default="luh0502/NeAR")  # type: ignore[valid-type]
    hub_revision: StringProperty(name="Revision", default="")  # type: ignore[valid-type]
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device",
        items=[
            ("AUTO", "Auto", "CUDA when available, else CPU"),
            ("CUDA", "CUDA", "NVIDIA GPU (gsplat rasterizer)"),
            ("CPU", "CPU", "Any machine (our own rasterizer)"),
        ],
        default="AUTO",
    )
    precision: EnumProperty(  # type: ignore[valid-type]
        name="Precision",
        items=[
            ("FP32", "Full (fp32)", "Exact; the only sensible choice on CPU"),
            ("BF16", "bfloat16", "Faster on recent GPUs"),
            ("FP16", "float16", "Faster on older GPUs"),
        ],
        default="FP32",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "model_source")
        if self.model_source == "FOLDER":
            layout.prop(self, "model_folder")
        elif self.model_source == "HUB":
            layout.prop(self, "hub_repo")
            layout.prop(self, "hub_revision")
            if not bpy.app.online_access:
                layout.label(
                    text="Online access is off: only an already downloaded copy can be used.", icon="INFO"
                )
        row = layout.row()
        row.prop(self, "device")
        row.prop(self, "precision")


def get_preferences(context=None):
    """The add-on preferences, or None when the add-on is not enabled under its package name
    (e.g. imported by tests under another name)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


classes = (NearPreferences,)
