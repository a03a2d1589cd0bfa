"""Viewport (Rendered shading) session: cheap updates on the main thread, drawing a texture."""

from __future__ import annotations

from typing import Any

import numpy as np

from near_blender import NearError

from . import scene_bridge
from .session import RenderSession


class ViewportSession:
    """Keeps the last frame for the viewport; recomputes only when the view or scene changed."""

    def __init__(self) -> None:
        self.pixels: np.ndarray | None = None
        self.key: tuple | None = None
        self.error: str | None = None

    def update(self, engine: Any, context: Any, depsgraph: Any) -> None:
        self.key = None  # scene changed: redraw on next view_draw

    def draw(self, engine: Any, context: Any, depsgraph: Any) -> None:
        region, rv3d = context.region, context.region_data
        key = (
            region.width,
            region.height,
            tuple(map(tuple, rv3d.view_matrix)),
            tuple(map(tuple, rv3d.window_matrix)),
        )
        if key != self.key:
            try:
                cam = scene_bridge.viewport_camera(region, rv3d)
                env = scene_bridge.environment_from_world(depsgraph.scene.world)
                self.pixels = RenderSession.render_images(cam, env, transparent=False)["rgba"]
                self.error = None
            except NearError as e:
                self.error = str(e)
                self.pixels = np.zeros((region.height, region.width, 4), np.float32)
            self.key = key
        self._draw_pixels(engine, depsgraph.scene, self.pixels)

    @staticmethod
    def _draw_pixels(engine: Any, scene: Any, pixels: np.ndarray) -> None:
        import gpu
        from gpu_extras.presets import draw_texture_2d

        H, W = pixels.shape[:2]
        flat = np.ascontiguousarray(pixels[::-1], dtype=np.float32).reshape(-1)
        buf = gpu.types.Buffer("FLOAT", W * H * 4, flat)
        tex = gpu.types.GPUTexture((W, H), format="RGBA16F", data=buf)
        gpu.state.blend_set("ALPHA_PREMULT")
        engine.bind_display_space_shader(scene)
        draw_texture_2d(tex, (0, 0), W, H)
        engine.unbind_display_space_shader()
        gpu.state.blend_set("NONE")
