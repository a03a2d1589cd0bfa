"""The final-render session (F12, ``blender -b -f/-a``): scene -> NeAR conditions -> passes.

Everything model-related is delegated to :class:`near_blender.scene.SceneRenderer`, which keeps the
per-asset and per-lighting caches across frames; this module only reads the scene through the
bridge, reports progress, honours cancel (``test_break``) and fills Blender's passes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment
from near_blender.utils.progress import Cancelled

from . import scene_bridge
from .assets import SceneAsset, collect_assets, sidecar_key
from .passes import ALL_PASSES, EXTRA_PASSES


@dataclass(frozen=True)
class RenderOptions:
    """Settings of one render: the scene's Render Properties > NeAR panel, the film, and the
    add-on preferences' precision (``$NEAR_PRECISION`` when there are no preferences)."""

    transparent: bool = False  # Film > Transparent: no world behind the assets (alpha < 1)
    background_strength: float = 1.0  # multiplier of the world seen directly by the camera
    antialiased: bool = False  # gsplat's antialiased rasterization mode
    precision: str = "fp32"  # network precision: fp32 | bf16 | fp16
    passes: tuple[str, ...] = ("light", "base")  # the viewport skips "base"

    @classmethod
    def from_scene(
        cls, scene: Any, prefs: Any = None, passes: tuple[str, ...] = ("light", "base")
    ) -> RenderOptions:
        settings = getattr(scene, "near", None)
        precision = getattr(prefs, "precision", None) or os.environ.get("NEAR_PRECISION", "FP32")
        return cls(
            transparent=bool(scene.render.film_transparent),
            background_strength=float(settings.background_strength) if settings is not None else 1.0,
            antialiased=bool(settings.antialiased) if settings is not None else False,
            precision=precision.lower(),
            passes=passes,
        )


_renderers: dict[int, Any] = {}  # id(pipeline) -> SceneRenderer (kept across frames and renders)
_slats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def scene_renderer(pipe: Any) -> Any:
    from near_blender.scene import SceneRenderer

    r = _renderers.get(id(pipe))
    if r is None or r.pipe is not pipe:
        _renderers.clear()
        r = _renderers[id(pipe)] = SceneRenderer(pipe)
    return r


def load_sidecar(asset: SceneAsset) -> tuple[tuple, np.ndarray, np.ndarray]:
    """(cache key, coords, feats) of an asset's LH-SLAT (its file, or its bytes packed into the
    .blend), re-read only when it changed."""
    from near_blender.data.slat_io import load_slat_npz

    key = sidecar_key(asset)
    if key not in _slats:
        if len(_slats) > 64:
            _slats.clear()
        _slats[key] = load_slat_npz(asset.sidecar, data=asset.packed)
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
            prefs = self.preferences()
            images = self.render_images(
                camera, env, RenderOptions.from_scene(scene, prefs), assets, prefs, progress,
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
        options: RenderOptions = RenderOptions(),
        assets: list[Any] = (),
        prefs: Any = None,
        progress: Any = None,
        cancel: Any = None,
    ) -> dict[str, np.ndarray]:
        """All pass images, top row first: ``rgba`` [H,W,4] scene-linear (premultiplied over the
        world background times ``options.background_strength`` unless ``options.transparent``),
        ``depth`` [H,W,1] (1e10 where empty), ``alpha``, ``base_color``, ``roughness``,
        ``metallic``, ``shadow``, ``normal`` (world space)."""
        from near_blender.scene import PlacedAsset, composite_over

        H, W = camera.height, camera.width
        if assets:
            from .model_manager import get_pipeline

            pipe = get_pipeline(prefs)
            placed = []
            for a in assets:
                key, coords, feats = load_sidecar(a)
                placed.append(PlacedAsset(key, coords, feats, a.matrix_world))
            imgs = scene_renderer(pipe).render(
                placed, camera, env, passes=options.passes, progress=progress, cancel=cancel,
                mode="antialiased" if options.antialiased else None, precision=options.precision,
            )  # fmt: skip
        else:
            from near_blender.scene import _empty

            imgs = _empty(H, W)
        background = None
        if not options.transparent:
            _, dirs = camera.pixel_rays()
            background = (env.radiance_at(dirs) * options.background_strength).astype(np.float32)
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
