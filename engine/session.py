"""The final-render session: reads the scene through the bridge, renders, fills Blender's passes."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment

from . import scene_bridge
from .passes import ALL_PASSES, EXTRA_PASSES


class RenderSession:
    """Owns everything one RenderEngine instance needs across frames (models, caches)."""

    def __init__(self) -> None:
        self.last_stats: dict[str, Any] = {}

    # -- entry point from NearRenderEngine.render ------------------------------------------------
    def render(self, engine: Any, depsgraph: Any) -> None:
        scene = depsgraph.scene
        t0 = time.perf_counter()
        try:
            camera = self.read_camera(engine, scene)
            env = scene_bridge.environment_from_world(scene.world)
            engine.update_stats("NeAR", "Rendering background")
            images = self.render_images(camera, env, transparent=scene.render.film_transparent)
        except NearError as e:
            _fail(engine, str(e))
            return
        if engine.test_break():
            return
        self.write_result(engine, scene, depsgraph.view_layer, images)
        self.last_stats = {"seconds": time.perf_counter() - t0, "size": (camera.width, camera.height)}
        engine.update_progress(1.0)

    # -- pieces (also used by tests and the batch renderer) ---------------------------------------
    @staticmethod
    def read_camera(engine: Any, scene: Any) -> Camera:
        cam_obj = engine.camera_override or scene.camera
        if cam_obj is None:
            return scene_bridge.camera_from_object(None, scene)
        return scene_bridge.camera_from_object(cam_obj, scene, engine.camera_model_matrix(cam_obj))

    @staticmethod
    def render_images(camera: Camera, env: Environment, transparent: bool) -> dict[str, np.ndarray]:
        """All pass images, top row first: rgba [H,W,4] scene-linear, depth/alpha/... [H,W,C]."""
        H, W = camera.height, camera.width
        images: dict[str, np.ndarray] = {}
        rgba = np.zeros((H, W, 4), np.float32)
        if not transparent:
            _, dirs = camera.pixel_rays()
            rgba[..., :3] = env.radiance_at(dirs)
            rgba[..., 3] = 1.0
        images["rgba"] = rgba
        for spec in EXTRA_PASSES:
            images[spec.key] = np.zeros((H, W, spec.channels), np.float32)
        images["depth"][:] = np.float32(1e10)  # Blender's "no hit" depth
        return images

    @staticmethod
    def write_result(engine: Any, scene: Any, view_layer: Any, images: dict[str, np.ndarray]) -> None:
        H, W = images["rgba"].shape[:2]
        layer_name = view_layer.name if view_layer is not None else ""
        for spec in EXTRA_PASSES:
            engine.add_pass(spec.name, spec.channels, spec.chan_id, layer=layer_name)
        result = engine.begin_result(0, 0, W, H, layer=layer_name)
        try:
            passes = {rp.name: rp for rp in result.layers[0].passes}
            for spec in ALL_PASSES:
                rp = passes.get(spec.name)
                if rp is None:  # e.g. the compositor asked for a subset
                    continue
                img = images[spec.key]
                flat = np.ascontiguousarray(
                    img[::-1].reshape(-1), dtype=np.float32
                )  # Blender: bottom row first
                rp.rect.foreach_set(flat)
        finally:
            engine.end_result(result)


def _fail(engine: Any, message: str) -> None:
    engine.error_set(message)
    engine.report({"ERROR"}, message)
