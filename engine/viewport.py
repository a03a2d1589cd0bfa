"""Viewport (Rendered shading) session: the NeAR assets under the world, drawn as a texture.

Renders on the main thread, like Blender's Workbench: only when the view, the region size or the
scene changed (``view_update``), at 1/``scene.near.preview_scale`` of the region's pixels, with the
light pass only (HDR, alpha, depth), scene-linear and drawn through Blender's display transform
(``bind_display_space_shader``), so the view transform / look / exposure apply as in F12. A scene
that cannot render (missing LH-SLAT, a world without an environment, no model) shows what it can and
puts the error in the viewport's engine text.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from near_blender import NearError

from . import scene_bridge
from .assets import collect_assets
from .session import RenderOptions, RenderSession


class ViewportSession:
    """Keeps the last frame for the viewport; recomputes only when the view or scene changed."""

    def __init__(self) -> None:
        self.pixels: np.ndarray | None = None
        self.key: tuple | None = None
        self.error: str | None = None
        self.scene_version = 0  # bumped by every depsgraph update (view_update)
        self.last_seconds = 0.0

    def update(self, engine: Any, context: Any, depsgraph: Any) -> None:
        self.scene_version += 1  # objects, world, settings changed: re-render at the next draw

    def draw(self, engine: Any, context: Any, depsgraph: Any) -> None:
        region, rv3d = context.region, context.region_data
        scale = preview_scale(depsgraph.scene)
        key = (
            self.scene_version,
            region.width,
            region.height,
            scale,
            tuple(map(tuple, rv3d.view_matrix)),
            tuple(map(tuple, rv3d.window_matrix)),
        )
        if key != self.key:
            t0 = time.perf_counter()
            self.pixels, self.error = self.frame(depsgraph, region, rv3d, scale)
            self.last_seconds = time.perf_counter() - t0
            self.key = key
            if self.error:
                engine.update_stats("", f"NeAR: {self.error}")
            else:
                h, w = self.pixels.shape[:2]
                engine.update_stats("", f"NeAR {w}x{h}, {self.last_seconds * 1000:.0f} ms")
        self._draw_pixels(engine, depsgraph.scene, self.pixels, region.width, region.height)

    @staticmethod
    def frame(depsgraph: Any, region: Any, rv3d: Any, scale: int = 1) -> tuple[np.ndarray, str | None]:
        """(RGBA [h, w, 4] scene-linear, premultiplied; the error message or None). ``h, w`` are the
        region's size divided by ``scale``. On an error the world alone is shown (or black)."""
        scene = depsgraph.scene
        cam = scene_bridge.viewport_camera(region, rv3d, scale)
        prefs = RenderSession.preferences()
        options = RenderOptions.from_scene(scene, prefs, passes=("light",))
        env = None
        try:
            env = scene_bridge.environment_from_world(scene.world)
            rgba = RenderSession.render_images(cam, env, options, collect_assets(depsgraph), prefs)["rgba"]
            return rgba, None
        except NearError as e:
            if env is None:
                return np.zeros((cam.height, cam.width, 4), np.float32), str(e)
            return RenderSession.render_images(cam, env, options)["rgba"], str(e)

    @staticmethod
    def _draw_pixels(engine: Any, scene: Any, pixels: np.ndarray, width: int, height: int) -> None:
        import gpu
        from gpu_extras.presets import draw_texture_2d

        H, W = pixels.shape[:2]
        flat = np.ascontiguousarray(pixels[::-1], dtype=np.float32).reshape(-1)
        buf = gpu.types.Buffer("FLOAT", W * H * 4, flat)
        tex = gpu.types.GPUTexture((W, H), format="RGBA16F", data=buf)
        gpu.state.blend_set("ALPHA_PREMULT")
        engine.bind_display_space_shader(scene)
        draw_texture_2d(tex, (0, 0), width, height)  # upscaled to the region when scale > 1
        engine.unbind_display_space_shader()
        gpu.state.blend_set("NONE")


def preview_scale(scene: Any) -> int:
    """The viewport's resolution divisor (Render Properties > NeAR > Viewport Resolution)."""
    settings = getattr(scene, "near", None)
    return int(settings.preview_scale) if settings is not None else 1
