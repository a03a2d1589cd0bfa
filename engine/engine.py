"""The NEAR RenderEngine: thin callbacks that delegate to a session (as Blender's Cycles add-on)."""

from __future__ import annotations

import bpy

from .properties import enabled_passes


class NearRenderEngine(bpy.types.RenderEngine):
    """NeAR: relightable neural assets rendered under the world's HDRI."""

    bl_idname = "NEAR"
    bl_label = "NeAR"
    bl_use_preview = False
    bl_use_eevee_viewport = True  # Material Preview stays EEVEE
    bl_use_postprocess = True  # compositor and sequencer apply
    bl_use_shading_nodes_custom = False  # keep the normal shader node UI

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = None
        self.viewport = None

    def __del__(self):
        # Sessions hold only Python/torch memory; drop references so they are freed promptly. The
        # RNA struct may already be gone when Python collects this object.
        try:
            viewport, self.session, self.viewport = self.viewport, None, None
            if viewport is not None:
                viewport.close()  # ends its worker thread
        except ReferenceError:
            pass
        parent_del = getattr(super(), "__del__", None)
        if parent_del is not None:
            parent_del()

    # -- final render (F12, blender -b -f/-a) -----------------------------------------------------
    def render(self, depsgraph):
        from .session import RenderSession

        if self.session is None:
            self.session = RenderSession()
        self.session.render(self, depsgraph)

    def update_render_passes(self, scene=None, renderlayer=None):
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", "COLOR")
        for spec in enabled_passes(renderlayer):  # View Layer Properties > NeAR Passes
            self.register_pass(scene, renderlayer, spec.name, spec.channels, spec.chan_id, spec.kind)

    # -- viewport (Rendered shading) --------------------------------------------------------------
    def view_update(self, context, depsgraph):
        from .viewport import ViewportSession

        if self.viewport is None:
            self.viewport = ViewportSession()
        self.viewport.update(self, context, depsgraph)

    def view_draw(self, context, depsgraph):
        if self.viewport is not None:
            self.viewport.draw(self, context, depsgraph)
