"""The final-render session (F12, ``blender -b -f/-a``): scene -> NeAR conditions -> passes.

Everything model-related is delegated to :class:`near_blender.scene.SceneRenderer`, which keeps the
per-asset and per-lighting caches across frames; this module reads the scene through the bridge,
reports progress, honours cancel (``test_break``) and fills Blender's passes. It also owns the
process's :class:`RenderCaches` (one lock-guarded object), shared by F12, the viewport's worker
(:mod:`.viewport`) and batch renders (:mod:`.batch`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment
from near_blender.render.passes import pass_images
from near_blender.utils.progress import Cancelled

from . import scene_bridge
from .assets import SceneAsset, collect_assets, sidecar_key
from .model_manager import model_spec
from .passes import COMBINED
from .properties import enabled_passes
from .tiles import MARGIN, TILE, needs_tiles, padded, tile_boxes
from .world_bake import world_baker


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
        strength = float(settings.background_strength) if settings is not None else 1.0
        if not math.isfinite(strength) or strength < 0:
            raise NearError(
                f"Background Strength is {strength}: set a number >= 0 in Render Properties > NeAR > Background Strength."
            )
        return cls(
            transparent=bool(scene.render.film_transparent),
            background_strength=strength,
            antialiased=bool(settings.antialiased) if settings is not None else False,
            precision=precision.lower(),
            passes=passes,
        )


class RenderCaches:
    """What every NeAR render of this process shares -- F12, the viewport's worker, batch renders
    -- behind one lock: the scene renderer of the loaded model (asset encodings, lighting tokens,
    environment conditioning) and the LH-SLAT sidecars read from disk.

    Hold :attr:`lock` around any use of :meth:`scene_renderer` and :meth:`sidecar`; model work of
    two renders is serialised (they would compete for the same cores or GPU anyway). Blender's
    draw callbacks never take it: they only snapshot and draw.
    """

    MAX_SIDECARS = 64

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._renderer: Any = None
        self._slats: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def scene_renderer(self, pipe: Any) -> Any:
        """The :class:`~near_blender.scene.SceneRenderer` of ``pipe`` (a new model drops the old caches)."""
        from near_blender.scene import SceneRenderer

        with self.lock:
            if self._renderer is None or self._renderer.pipe is not pipe:
                self._renderer = SceneRenderer(pipe)
            return self._renderer

    def sidecar(self, asset: SceneAsset) -> tuple[tuple, np.ndarray, np.ndarray]:
        """(cache key, coords, feats) of an asset's LH-SLAT (its file, or its bytes packed into the
        .blend), re-read only when it changed."""
        from near_blender.data.slat_io import load_slat_npz

        key = sidecar_key(asset)
        with self.lock:
            if key in self._slats:
                self._slats.move_to_end(key)
            else:
                self._slats[key] = load_slat_npz(asset.sidecar, data=asset.packed)
                while len(self._slats) > self.MAX_SIDECARS:
                    self._slats.popitem(last=False)
            c, f = self._slats[key]
        return key, c, f

    def stats(self) -> dict[str, int]:
        """The scene renderer's cache counters (encoder runs and hits), zeros before the first render."""
        with self.lock:
            return dict(self._renderer.stats) if self._renderer is not None else {}

    def clear(self) -> None:
        with self.lock:
            self._renderer = None
            self._slats.clear()


_CACHES = RenderCaches()


def render_caches() -> RenderCaches:
    """The process's one :class:`RenderCaches`."""
    return _CACHES


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
            check_frame_memory(camera, depsgraph.view_layer)
            env = world_baker().environment(
                scene.world, scene.frame_current, in_render=True, progress=progress
            )
            if env.meta.get("repaired"):
                engine.report({"WARNING"}, env.meta["repaired"])
            assets = collect_assets(depsgraph)
            prefs = self.preferences()
            options, model = RenderOptions.from_scene(scene, prefs), model_spec(prefs)
            if needs_tiles(camera.width, camera.height):
                self.render_tiled(engine, depsgraph.view_layer, camera, env, options, assets, model, progress)
                images = None
            else:
                images = self.render_images(
                    camera, env, options, assets, model, progress, cancel=engine.test_break
                )
        except Cancelled:
            return
        except NearError as e:
            _fail(engine, str(e))
            return
        if engine.test_break():
            return
        if images is not None:
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
        # Only multiview moves the camera per view (camera_model_matrix). A mono render reads the
        # camera's matrix_world as scene_bridge.scene_camera does (`near camera-from-blend`): the
        # model matrix is that matrix re-normalized in float32, a last-bit difference the decoder
        # can amplify, and `near render ASSET.npz` must see F12's camera to the bit.
        matrix = engine.camera_model_matrix(cam_obj) if scene.render.use_multiview else None
        return scene_bridge.camera_from_object(cam_obj, scene, matrix)

    @staticmethod
    def render_images(camera: Camera, env: Environment, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """All pass images, top row first: ``rgba`` [H,W,4] scene-linear (premultiplied over the
        world background times ``options.background_strength`` unless ``options.transparent``),
        ``depth`` [H,W,1] (1e10 where empty), ``alpha``, ``base_color``, ``roughness``,
        ``metallic``, ``shadow``, ``normal`` (world space).

        The rest as :meth:`render_sizes`: ``options`` (:class:`RenderOptions`), ``assets``, ``model``
        (a :class:`~.model_manager.ModelSpec` on worker threads, or the add-on preferences, read on
        the calling thread), ``progress``, ``cancel``. Model work holds :func:`render_caches`' lock."""
        return RenderSession.render_sizes([camera], env, *args, **kwargs)[0]

    @staticmethod
    def render_sizes(
        cameras: Sequence[Camera],
        env: Environment,
        options: RenderOptions = RenderOptions(),
        assets: Sequence[SceneAsset] = (),
        model: Any = None,
        progress: Any = None,
        cancel: Any = None,
        on_images: Any = None,
        keep: bool = True,
    ) -> list[dict[str, np.ndarray]]:
        """:meth:`render_images` for cameras of one pose at several sizes (the viewport's coarse and
        final passes): the networks run once. ``on_images(i, images)`` as each size is done."""
        from near_blender.scene import PlacedAsset, _empty

        def finish(i: int, imgs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = _pass_images(cameras[i], env, options, imgs)
            if on_images is not None:
                on_images(i, out)
            if keep:
                results.append(out)
            return out

        results: list[dict[str, np.ndarray]] = []
        if not assets:
            for i, c in enumerate(cameras):
                finish(i, _empty(c.height, c.width))
            return results
        from .model_manager import get_pipeline

        caches = render_caches()
        with caches.lock:
            if progress is not None:
                progress(0.0, "loading the model")  # instant once loaded; a Hub model downloads here
            pipe = get_pipeline(model)
            placed = []
            for a in assets:
                key, coords, feats = caches.sidecar(a)
                placed.append(PlacedAsset(key, coords, feats, a.matrix_world))
            caches.scene_renderer(pipe).render_sizes(
                placed, cameras, env, passes=options.passes, progress=progress, cancel=cancel,
                mode="antialiased" if options.antialiased else None, precision=options.precision,
                on_images=finish, keep=False,
            )  # fmt: skip
        return results

    @staticmethod
    def render_tiled(
        engine: Any, view_layer: Any, camera: Camera, env: Environment, options: RenderOptions,
        assets: Sequence[SceneAsset], model: Any, progress: Any,
    ) -> None:  # fmt: skip
        """A frame larger than a tile (:mod:`.tiles`): the networks run once, each tile is rasterized
        and written into Blender's render result as it is done (NeAR holds one tile at a time)."""
        boxes = tile_boxes(camera.width, camera.height)

        def write(i: int, padded_images: dict[str, np.ndarray]) -> None:
            x0, y0, w, h = boxes[i]
            images = {k: v[MARGIN : MARGIN + h, MARGIN : MARGIN + w] for k, v in padded_images.items()}
            if progress is not None:
                progress((i + 1) / len(boxes), f"tile {i + 1}/{len(boxes)} written")
            RenderSession.write_result(
                engine, view_layer, images, x0, camera.height - y0 - h, add_passes=i == 0
            )

        RenderSession.render_sizes([camera.cropped(*padded(b)) for b in boxes], env, options, assets, model, progress,
                                   engine.test_break, on_images=write, keep=False)  # fmt: skip

    @staticmethod
    def write_result(
        engine: Any,
        view_layer: Any,
        images: dict[str, np.ndarray],
        x: int = 0,
        y: int = 0,
        add_passes: bool = True,
    ) -> None:
        """Write pass images (top row first) into Blender's render result at pixel ``(x, y)`` (counted
        from the bottom left, as Blender does)."""
        H, W = images["rgba"].shape[:2]
        layer_name = view_layer.name if view_layer is not None else ""
        written = enabled_passes(view_layer)  # View Layer Properties > NeAR Passes
        if add_passes:
            for spec in written:
                engine.add_pass(spec.name, spec.channels, spec.chan_id, layer=layer_name)
        result = engine.begin_result(x, y, W, H, layer=layer_name)
        try:
            passes = {rp.name: rp for rp in result.layers[0].passes}
            for spec in (COMBINED, *written):
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


def check_frame_memory(camera: Camera, view_layer: Any) -> None:
    """Refuse a frame whose render result and NeAR tile cannot fit in the free memory (before
    Blender or NeAR allocate anything for it), naming the settings that shrink it."""
    from near_blender.render.memory import check_frame_fits

    channels = COMBINED.channels + sum(p.channels for p in enabled_passes(view_layer))
    check_frame_fits(camera.width, camera.height, channels, TILE + 2 * MARGIN,
                     "View Layer Properties > NeAR Passes", "Output Properties > Format > Resolution %")  # fmt: skip


def _pass_images(
    camera: Camera, env: Environment, options: RenderOptions, imgs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The renderer's images as Blender's passes (:func:`near_blender.render.passes.pass_images`
    with the film's transparency and the NeAR panel's background strength)."""
    return pass_images(camera, env, imgs, options.transparent, options.background_strength)


last_error: str | None = None  # the latest render failure (batch renders check it after each frame)


def _fail(engine: Any, message: str) -> None:
    global last_error
    last_error = message
    # The report reaches the status bar and, in background renders, the console (once) and the
    # operator's caller; error_set adds the message to the render window, which only the UI has (in
    # background mode it would print the message a second time).
    if not _background():
        engine.error_set(message)
    engine.report({"ERROR"}, message)


def _background() -> bool:
    import bpy

    return bool(bpy.app.background)
