"""Pack a NeAR asset's LH-SLAT sidecar into the .blend, or unpack it back to its file.

File > External Data > Pack / Unpack NeAR LH-SLATs act on every NeAR asset of the file; the
buttons in Object Properties > NeAR act on the active object. The work itself is in
``engine/assets.py`` (``pack_sidecar`` / ``unpack_sidecar``).
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty

from near_blender import NearError

from ..engine.assets import pack_sidecar, unpack_sidecar


def _targets(context: Any, all_assets: bool, packed: bool) -> list[Any]:
    """NeAR assets to act on: every one in the file, or the active object; only those whose
    packed state is ``not packed`` (what there is to do)."""
    objs = list(bpy.data.objects) if all_assets else [context.object] if context.object else []
    return [
        o for o in objs
        if o.near_asset.is_asset and o.library is None and (o.near_asset.packed is not None) != packed
    ]  # fmt: skip


class _LHSlatOperator:
    all_assets: BoolProperty(  # type: ignore[valid-type]
        name="All NeAR Assets",
        description="Every NeAR asset in the file, not just the active object",
        default=False,
    )
    _packing = True

    def execute(self, context: Any) -> set[str]:
        targets = _targets(context, self.all_assets, packed=self._packing)
        if not targets:
            what = "to pack" if self._packing else "packed"
            self.report({"INFO"}, f"No NeAR asset LH-SLAT {what}.")
            return {"CANCELLED"}
        done, failed = 0, []
        for obj in targets:
            try:
                pack_sidecar(obj) if self._packing else unpack_sidecar(obj)
                done += 1
            except NearError as e:
                failed.append(str(e))
        for msg in failed:
            self.report({"ERROR"}, msg)
        verb = "Packed" if self._packing else "Unpacked"
        if done:
            self.report({"INFO"}, f"{verb} {done} NeAR LH-SLAT(s).")
        return {"FINISHED"} if done else {"CANCELLED"}


class NEAR_OT_pack_lhslat(_LHSlatOperator, bpy.types.Operator):
    """Pack the LH-SLAT sidecar file into the .blend (one self-contained file to share or send to a farm)"""

    bl_idname = "near.pack_lhslat"
    bl_label = "Pack NeAR LH-SLAT"
    bl_options = {"REGISTER", "UNDO"}
    _packing = True


class NEAR_OT_unpack_lhslat(_LHSlatOperator, bpy.types.Operator):
    """Write the packed LH-SLAT back to its sidecar file (never overwriting a different file) and use the file"""

    bl_idname = "near.unpack_lhslat"
    bl_label = "Unpack NeAR LH-SLAT"
    bl_options = {"REGISTER", "UNDO"}
    _packing = False


def menu_external_data(self: Any, context: Any) -> None:
    layout = self.layout
    layout.separator()
    layout.operator(NEAR_OT_pack_lhslat.bl_idname, text="Pack NeAR LH-SLATs").all_assets = True
    layout.operator(NEAR_OT_unpack_lhslat.bl_idname, text="Unpack NeAR LH-SLATs").all_assets = True


classes = (NEAR_OT_pack_lhslat, NEAR_OT_unpack_lhslat)
MENUS = ((bpy.types.TOPBAR_MT_file_external_data, menu_external_data),)
