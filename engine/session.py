"""The final-render session (F12, ``blender -b -f/-a``): scene -> NeAR conditions -> passes.

Everything model-related is delegated to :class:`near_blender.scene.SceneRenderer`, which keeps the
per-asset and per-lighting caches across frames; this module only reads the scene through the
bridge, reports progress, honours cancel (``test_break``) and fills Blender's passes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment
from near_blender.utils.progress import Cancelled

from . import scene_bridge
from .assets import collect_assets, sidecar_key
from .passes import ALL_PASSES, EXTRA_PASSES

_renderers: dict[int, Any] = {}  # id(pipeline) -> SceneRenderer (kept across frames and renders)
_slats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def scene_renderer(pipe: Any) -> Any:
    from near_blender.scene import SceneRenderer

    r = _renderers.get(id(pipe))
    if r is None or r.pipe is not pipe:
        _renderers.clear()
        r = _renderers[id(pipe)] = SceneRenderer(pipe)
    return r


def load_sidecar(path: Any) -> tuple[tuple, np.ndarray, np.ndarray]:
    """(cache key, coords, feats) of a sidecar, re-read only when the file changed."""
    from near_blender.data.slat_io import load_slat_npz

    key = sidecar_key(path)
    if key not in _slats:
        if len(_slats) > 64:
            _slats.clear()
        _slats[key] = load_slat_npz(path)
    c, f = _slats[key]
    return key, c, f


class RenderSession:
    """Owns what one RenderEngine instance needs across frames."""

    def __init__(self) -> None:
        self.last_stats: dict[str, Any] = {}

    # -- entry point from NearRenderEngine.render ------------------------------------------------
    def render(self, engine: Any, depsgraph: Any) -> None:
        # The evaluated scene: its camera, world (Mapping rotation) and objects are at this frame's
        # animated values. The original scene is not updated during `blender -a` / render(animation).
        scene = depsgraph.scene_eval
        t0 = time.perf_counter()

        def progress(fraction: float, message: str) -> None:
            engine.update_progress(fraction)
            engine.update_stats("NeAR", message)

        try:
            camera = self.read_camera(engine, scene, depsgraph)
            env = scene_bridge.environment_from_world(scene.world)
            assets = collect_assets(depsgraph)
            images = self.render_images(
                camera, env, scene.render.film_transparent, assets, self.preferences(), progress,
                cancel=engine.test_break,
            )  # fmt: skip
        except Cancelled:
            return
        except NearError as e:
            _fail(engine, str(e))
            return
        if engine.test_break():
            return
        self.write_result(engine, depsgraph.view_layer, images)
        self.last_stats = {"seconds": time.perf_counter() - t0, "size": (camera.width, camera.height),
                           "assets": len(assets)}  # fmt: skip
        engine.update_progress(1.0)

    @staticmethod
    def preferences() -> Any:
        try:
            from ..ui.preferences import get_preferences

            return get_preferences()
        except Exception:  # noqa: BLE001 - preferences unavailable (tests, background scripts)
            return None

    @staticmethod
    def read_camera(engine: Any, scene: Any, depsgraph: Any = None) -> Camera:
        cam_obj = engine.camera_override or scene.camera
        if cam_obj is None:
            return scene_bridge.camera_from_object(None, scene)
        if depsgraph is not None and hasattr(cam_obj, "evaluated_get"):
            cam_obj = cam_obj.evaluated_get(depsgraph)  # animated transform and lens at this frame
        return scene_bridge.camera_from_object(cam_obj, scene, engine.camera_model_matrix(cam_obj))

    @staticmethod
    def render_images(
        camera: Camera,
        env: Environment,
        transparent: bool,
        assets: list[Any] = (),
        prefs: Any = None,
        progress: Any = None,
        cancel: Any = None,
    ) -> dict[str, np.ndarray]:
        """All pass images, top row first: ``rgba`` [H,W,4] scene-linear (premultiplied over the
        world background unless ``transparent``), ``depth`` [H,W,1] (1e10 where empty), ``alpha``,
        ``base_color``, ``roughness``, ``metallic``, ``shadow``, ``normal`` (world space)."""
        from near_blender.scene import PlacedAsset, composite_over

        H, W = camera.height, camera.width
        if assets:
            from .model_manager import get_pipeline

            pipe = get_pipeline(prefs)
            placed = []
            for a in assets:
                key, coords, feats = load_sidecar(a.sidecar)
                placed.append(PlacedAsset(key, coords, feats, a.matrix_world))
            imgs = scene_renderer(pipe).render(placed, camera, env, progress=progress, cancel=cancel)
        else:
            from near_blender.scene import _empty

            imgs = _empty(H, W)
        background = None
        if not transparent:
            _, dirs = camera.pixel_rays()
            background = env.radiance_at(dirs).astype(np.float32)
        out = {spec.key: imgs[spec.key] for spec in EXTRA_PASSES if spec.key in imgs}
        out["rgba"] = composite_over(imgs, background)
        out["depth"] = np.where(imgs["alpha"] > 1e-6, imgs["depth"], np.float32(1e10)).astype(np.float32)
        return out

    @staticmethod
    def write_result(engine: Any, view_layer: Any, images: dict[str, np.ndarray]) -> None:
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
                flat = np.ascontiguousarray(img[::-1], dtype=np.float32).reshape(
                    -1
                )  # Blender: bottom row first
                rp.rect.foreach_set(flat)
        finally:
            engine.end_result(result)


last_error: str | None = None  # the latest render failure (batch renders check it after each frame)


def _fail(engine: Any, message: str) -> None:
    global last_error
    last_error = message
    engine.error_set(message)
    engine.report({"ERROR"}, message)
