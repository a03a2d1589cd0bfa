"""Viewport (Rendered shading) session: Blender's callbacks only snapshot and draw; a worker renders.

``view_update`` / ``view_draw`` run on Blender's main thread and never run torch: they read what a
frame needs from bpy into an immutable :class:`ViewJob` (camera matrices and region size, the
world's environment -- re-read only when the world changed --, the assets' transforms and LH-SLAT
identities, the render options, which model) and hand it to one background thread
(:class:`~near_blender.utils.latest_worker.LatestJobWorker`). A new view supersedes the job in
flight: the worker checks between stages (and inside the renderer) and drops stale work.

Progressive refinement, as Cycles' start resolution: after a change the worker first renders at
1/:data:`COARSE_DIVISOR` of the region's pixels, then at the chosen Viewport Resolution. ``view_draw``
draws the newest finished frame, upscaled to the region, through Blender's display transform
(``bind_display_space_shader``, so view transform / look / exposure apply as in F12); the status
text says which pass is shown and how long it took. When a frame is ready the worker flags it and a
main-thread timer asks Blender for a redraw (``tag_redraw``).

Model work is serialised with F12 and batch renders through :func:`.session.render_caches`' lock.
Errors (a missing LH-SLAT, a world NeAR cannot read, no model) are drawn as the world alone (or
black) with the message in the viewport's text; nothing raises inside a draw callback.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment
from near_blender.utils.latest_worker import LatestJobWorker
from near_blender.utils.progress import Cancelled

from . import scene_bridge
from .assets import SceneAsset, collect_assets
from .model_manager import ModelSpec, model_spec
from .session import RenderOptions, RenderSession
from .world_bake import PendingBake, prepare_bake, world_baker, world_signature

# The first pass after a change renders 1/COARSE_DIVISOR of the region's pixels per axis.
COARSE_DIVISOR = 8
# How often the main-thread timer looks for a finished frame while the worker is busy (seconds).
REDRAW_POLL_S = 0.05
# Depsgraph data-block types whose change means the world's environment must be read again.
WORLD_TYPES = ("WORLD", "IMAGE", "NODETREE")


@dataclass(frozen=True)
class ViewJob:
    """Everything one viewport refresh needs, read on the main thread (no bpy inside)."""

    serial: int
    passes: tuple[tuple[str, Camera], ...]  # (label, camera): coarse first, then the final one
    env: Environment | None
    env_error: str | None
    assets: tuple[SceneAsset, ...]
    assets_error: str | None
    options: RenderOptions
    model: ModelSpec | None
    submitted_at: float = field(default_factory=time.perf_counter)
    bake: PendingBake | None = None  # a world to bake first (then ``env`` is replaced by its map)


@dataclass(frozen=True)
class ViewFrame:
    """A finished pass: RGBA ``[h, w, 4]`` scene-linear premultiplied, top row first."""

    serial: int
    label: str  # "coarse" or "final"
    pixels: np.ndarray
    error: str | None
    seconds: float  # from the start of the job's rendering to this frame
    latency: float  # from the job's submission to this frame
    final: bool


@dataclass(frozen=True)
class ViewActivity:
    """What the worker is doing for a job before its next frame (shown in the viewport's text)."""

    serial: int
    message: str


def render_pass(
    job: ViewJob, camera: Camera, cancelled: Callable[[], bool] | None = None
) -> tuple[np.ndarray, str | None]:
    """One pass of ``job`` at ``camera`` (worker thread): (RGBA, error or None). On an error the
    world alone is shown (black without a world). Raises :class:`Cancelled` when superseded."""
    if job.env is None:
        return np.zeros((camera.height, camera.width, 4), np.float32), job.env_error
    options, error = job.options, job.env_error or job.assets_error
    if error is None and job.assets:
        try:
            rgba = RenderSession.render_images(
                camera, job.env, options, job.assets, job.model, cancel=cancelled
            )
            return rgba["rgba"], None
        except NearError as e:
            error = str(e)
    return RenderSession.render_images(camera, job.env, options)["rgba"], error


def run_view_job(job: ViewJob, cancelled: Callable[[], bool], publish: Callable[[ViewFrame], None]) -> None:
    """The worker's job: every pass of ``job``, each published as soon as it is done. The passes
    share one pose, so the networks run once and only the rasterization is repeated per size."""
    if cancelled():
        raise Cancelled("superseded by a newer view")
    start = time.perf_counter()

    def done(i: int, pixels: np.ndarray, error: str | None) -> None:
        now = time.perf_counter()
        final = i == len(job.passes) - 1
        publish(
            ViewFrame(job.serial, job.passes[i][0], pixels, error, now - start, now - job.submitted_at, final)
        )

    cameras = [camera for _, camera in job.passes]

    def progress(fraction: float, message: str) -> None:
        publish(ViewActivity(job.serial, message))

    if job.bake is not None:  # finish the world's bake first (not cancelled: its map is cached for later)
        progress(0.0, "baking the world with Cycles")
        try:
            job = replace(job, env=world_baker().finish(job.bake), env_error=None)
        except NearError as e:
            job = replace(job, env_error=str(e))

    if job.env is None:
        for i, camera in enumerate(cameras):
            done(i, np.zeros((camera.height, camera.width, 4), np.float32), job.env_error)
        return
    error = job.env_error or job.assets_error
    if error is None and job.assets:
        try:
            RenderSession.render_sizes(cameras, job.env, job.options, job.assets, job.model, progress, cancelled,
                                       on_images=lambda i, images: done(i, images["rgba"], None))  # fmt: skip
            return
        except NearError as e:
            error = str(e)
    for i, camera in enumerate(cameras):
        done(i, RenderSession.render_images(camera, job.env, job.options)["rgba"], error)


def failed_frame(job: ViewJob, exc: BaseException) -> ViewFrame:
    """What the viewport shows when a job fails unexpectedly: black and the error in the text."""
    label, camera = job.passes[-1]
    message = f"NeAR viewport failed: {type(exc).__name__}: {exc}"
    pixels = np.zeros((camera.height, camera.width, 4), np.float32)
    return ViewFrame(job.serial, label, pixels, message, 0.0, time.perf_counter() - job.submitted_at, True)


def pass_cameras(region: Any, rv3d: Any, scale: int) -> tuple[tuple[str, Camera], ...]:
    """(label, camera) of each pass for a region: a coarse one first when it is coarser than the
    chosen Viewport Resolution ``1/scale``."""
    final = scene_bridge.viewport_camera(region, rv3d, scale)
    if scale >= COARSE_DIVISOR:
        return (("final", final),)
    return (("coarse", scene_bridge.viewport_camera(region, rv3d, COARSE_DIVISOR)), ("final", final))


class SceneSnapshotter:
    """Reads what a viewport frame needs from bpy (main thread only) into :class:`ViewJob` s; keeps
    the world's environment until the world changes (reading an HDRI's pixels is the costly part)."""

    def __init__(self) -> None:
        self.serial = 0
        self._env: Environment | None = None
        self._env_error: str | None = None
        self._env_world: str | None = None  # the world the environment was read from
        self._env_dirty = True
        self._bake: PendingBake | None = None
        self.environment_reads = 0

    def note_update(self, depsgraph: Any) -> None:
        """A depsgraph update arrived: re-read the environment if a world, image or node tree changed."""
        if any(_type_updated(depsgraph, t) for t in WORLD_TYPES):
            self._env_dirty = True

    def snapshot(self, depsgraph: Any, region: Any, rv3d: Any, scale: int) -> ViewJob:
        """The :class:`ViewJob` of the current view (reads bpy, never runs torch)."""
        scene = depsgraph.scene
        self.serial += 1
        passes = pass_cameras(region, rv3d, scale)
        self._refresh_environment(scene)
        assets: tuple[SceneAsset, ...] = ()
        assets_error = model_error = None
        try:
            assets = tuple(collect_assets(depsgraph))
        except NearError as e:
            assets_error = str(e)
        prefs = RenderSession.preferences()
        model = None
        try:
            model = model_spec(prefs)
        except NearError as e:
            model_error = str(e)
        options = RenderOptions.from_scene(scene, prefs, passes=("light",))
        return ViewJob(self.serial, passes, self._env, self._env_error, assets, assets_error or model_error,
                       options, model, bake=self._bake)  # fmt: skip

    def _refresh_environment(self, scene: Any) -> None:
        if self._bake is not None:  # a bake handed to the worker: use its map once it is there
            done = world_baker().cached(self._bake.world_name, self._bake.signature)
            if done is not None:
                self._env, self._env_error, self._bake = done, None, None
        world = scene.world
        name = world.name_full if world is not None else None
        if not self._env_dirty and name == self._env_world:
            return
        self._env_dirty, self._env_world, self._bake = False, name, None
        self.environment_reads += 1
        try:
            self._env, self._env_error = scene_bridge.environment_from_world(world), None
        except scene_bridge.UnsupportedWorldGraph:
            # baked by the worker (a separate Blender renders it); the previous map is shown meanwhile
            signature = world_signature(world, scene.frame_current)
            cached = world_baker().cached(world.name, signature)
            if cached is not None:
                self._env, self._env_error = cached, None
            else:
                self._bake = prepare_bake(world, signature, world_baker().size, world_baker().samples)
        except NearError as e:
            self._env, self._env_error = None, str(e)


class ViewportSession:
    """The viewport of one NEAR RenderEngine instance: snapshots on the main thread, a worker thread
    that renders, and the newest frame drawn.

    ``render_job`` (the worker's job function) and ``present`` (draws a frame into the region) are
    replaceable for tests and benchmarks; by default they are :func:`run_view_job` and a GPU
    texture drawn through the display transform.
    """

    def __init__(
        self,
        render_job: Callable[[ViewJob, Callable[[], bool], Callable[[ViewFrame], None]], None] = run_view_job,
        present: Callable[[Any, Any, ViewFrame, int, int], None] | None = None,
    ) -> None:
        self.worker = LatestJobWorker(
            render_job, on_result=self._on_frame, on_error=failed_frame, name="near-viewport"
        )
        self.present = present or GpuPresenter()
        self.snapshots = SceneSnapshotter()
        self.scene_version = 0  # bumped by every depsgraph update (view_update)
        self._submitted_key: tuple | None = None
        self._new_frame = False
        self._frame: ViewFrame | None = None  # the newest finished frame
        self._activity: ViewActivity | None = None  # what the worker does now
        self._status = ""
        self._timer: Callable[[], float | None] | None = None

    # -- main thread: Blender's callbacks ----------------------------------------------------------
    def update(self, engine: Any, context: Any, depsgraph: Any) -> None:
        """``view_update``: the scene changed (objects, world, settings); note what to re-read."""
        self.scene_version += 1
        self.snapshots.note_update(depsgraph)

    def draw(self, engine: Any, context: Any, depsgraph: Any) -> None:
        """``view_draw``: submit a job when the view or the scene changed, draw the newest frame."""
        region, rv3d = context.region, context.region_data
        scene = depsgraph.scene
        if rv3d is None:  # not a 3D viewport's main region: nothing to draw
            return
        scale = preview_scale(scene)
        key = (self.scene_version, region.width, region.height, scale,
               _matrix_key(rv3d.view_matrix), _matrix_key(rv3d.window_matrix))  # fmt: skip
        if key != self._submitted_key:
            self._submitted_key = key
            try:
                self.worker.submit(self.snapshots.snapshot(depsgraph, region, rv3d, scale))
            except NearError as e:  # e.g. an unreadable view: say so, keep the last picture
                engine.update_stats("", f"NeAR: {e}")
                return
            self._start_redraw_timer(engine)
        self._new_frame = False  # before reading: a frame published from now on asks for a redraw
        frame = self._frame
        if frame is not None:
            self.present(engine, scene, frame, region.width, region.height)
        status = self.status_text(frame)
        if status != self._status:
            self._status = status
            engine.update_stats("", status)

    def status_text(self, frame: ViewFrame | None) -> str:
        activity = self._activity
        if frame is None or (activity is not None and activity.serial > frame.serial and not frame.error):
            doing = activity.message if activity is not None else "rendering"
            return f"NeAR: {doing}..." if frame is None else f"{self._frame_text(frame)} - {doing}..."
        if frame.error:
            return f"NeAR: {frame.error}"
        refining = not frame.final or frame.serial != self.snapshots.serial
        return self._frame_text(frame) + (" - refining..." if refining else "")

    @staticmethod
    def _frame_text(frame: ViewFrame) -> str:
        h, w = frame.pixels.shape[:2]
        return f"NeAR {frame.label} {w}x{h}, {frame.seconds * 1000:.0f} ms"

    # -- redraw requests ---------------------------------------------------------------------------
    def _on_frame(self, result: ViewFrame | ViewActivity) -> None:  # worker thread: store and flag
        if isinstance(result, ViewActivity):
            self._activity = result
        else:
            self._frame = result
        self._new_frame = True

    def _start_redraw_timer(self, engine: Any) -> None:
        """A main-thread timer that asks Blender to redraw once a frame is ready (the worker never
        calls into Blender). No-op outside a UI session (no timers run there)."""
        if self._timer is not None:
            return
        try:
            import bpy
        except ImportError:
            return
        session, engine_ref = weakref.ref(self), _engine_ref(engine)

        def poll() -> float | None:
            me, eng = session(), engine_ref()
            if me is None or eng is None:
                return None
            if me._new_frame:
                try:
                    eng.tag_redraw()
                except ReferenceError:  # the viewport was closed
                    me._timer = None
                    return None
            if me.worker.busy or me._new_frame:
                return REDRAW_POLL_S
            me._timer = None
            return None

        self._timer = poll
        bpy.app.timers.register(poll, first_interval=REDRAW_POLL_S)

    def close(self) -> None:
        """Stop the worker (the engine instance is going away)."""
        self.worker.stop(timeout=0.5)


def _engine_ref(engine: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(engine)
    except TypeError:
        return lambda: engine


def _type_updated(depsgraph: Any, id_type: str) -> bool:
    try:
        return bool(depsgraph.id_type_updated(id_type))
    except (AttributeError, TypeError):
        return False


def _matrix_key(m: Any) -> tuple:
    return tuple(tuple(row) for row in m)


class GpuPresenter:
    """Draws a frame into the region as a texture, upscaled (float16, premultiplied alpha), through
    Blender's display transform; the texture is made once per frame, not once per draw."""

    def __init__(self) -> None:
        self._frame: ViewFrame | None = None
        self._texture: Any = None

    def __call__(self, engine: Any, scene: Any, frame: ViewFrame, width: int, height: int) -> None:
        import gpu
        from gpu_extras.presets import draw_texture_2d

        if frame is not self._frame:
            H, W = frame.pixels.shape[:2]
            flat = np.ascontiguousarray(frame.pixels[::-1], dtype=np.float32).reshape(-1)
            self._texture = gpu.types.GPUTexture(
                (W, H), format="RGBA16F", data=gpu.types.Buffer("FLOAT", W * H * 4, flat)
            )
            self._frame = frame
        gpu.state.blend_set("ALPHA_PREMULT")
        engine.bind_display_space_shader(scene)
        draw_texture_2d(self._texture, (0, 0), width, height)
        engine.unbind_display_space_shader()
        gpu.state.blend_set("NONE")


def preview_scale(scene: Any) -> int:
    """The viewport's resolution divisor (Render Properties > NeAR > Viewport Resolution)."""
    settings = getattr(scene, "near", None)
    return int(settings.preview_scale) if settings is not None else 1


def render_view_now(depsgraph: Any, region: Any, rv3d: Any, scale: int = 1) -> tuple[np.ndarray, str | None]:
    """The final pass of the current view, rendered on the calling thread (scripts, tests and the
    benchmark's synchronous baseline; never from a draw callback)."""
    job = SceneSnapshotter().snapshot(depsgraph, region, rv3d, scale)
    return render_pass(job, job.passes[-1][1])
