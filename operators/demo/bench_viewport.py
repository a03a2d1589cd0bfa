"""Blender-side timing of the rendered viewport (run by ``near bench viewport``).

One scene (a procedural mesh's NeAR asset, a studio HDRI world) seen through a simulated 3D
viewport region looking through the camera (the bpy module has no window). The camera orbits a few
degrees per step. Two paths, in the same process, on the same views:

* **worker** (today's viewport): ``view_update`` + ``view_draw`` snapshot and submit; a worker
  renders a coarse pass, then the chosen Viewport Resolution. After each camera change the script
  calls ``view_draw`` every ``--poll-ms`` (what Blender's redraw timer does) until the final frame
  of that view is drawn, timing every callback and the latency to the first (coarse) and the
  final frame.
* **synchronous** (the previous viewport): the frame is rendered inside ``view_draw``, world read
  included, so the callback lasts as long as the render.

    python operators/demo/bench_viewport.py --model DIR --width 1280 --height 720 --json out.json
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
from batch import bench_parser, start_script  # noqa: E402


class Recorder:
    """Engine and presenter stand-in (no GPU in background mode): records frames and status texts."""

    def __init__(self) -> None:
        self.frames: list = []
        self.status = ""

    def __call__(self, engine, scene, frame, width, height) -> None:
        self.frames.append(frame)

    def update_stats(self, a: str, b: str) -> None:
        self.status = b

    def tag_redraw(self) -> None:
        pass


class ViewRig:
    """A simulated 3D viewport region of ``width`` x ``height`` pixels looking through the scene
    camera; :meth:`view` turns it ``step`` degrees about world Z (Blender's RegionView3D stand-in)."""

    def __init__(self, scene, dg, width: int, height: int) -> None:
        cam = scene.camera
        self.dg = dg
        self.region = types.SimpleNamespace(width=width, height=height)
        self.window = cam.calc_matrix_camera(dg, x=width, y=height, scale_x=1, scale_y=1)
        self.base_view = cam.matrix_world.normalized().inverted()

    def view(self, step: float):
        import mathutils

        turn = mathutils.Matrix.Rotation(math.radians(step), 4, "Z")
        return types.SimpleNamespace(view_matrix=self.base_view @ turn, window_matrix=self.window)

    def context(self, rv3d):
        return types.SimpleNamespace(region=self.region, region_data=rv3d)


def _parse_args():
    """(arguments, the extension package): the benchmark's options, the extension registered."""
    p = bench_parser()
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--scale", type=int, default=2, help="Viewport Resolution divisor (1, 2 or 4)")
    p.add_argument("--steps", type=int, default=5, help="camera changes per path")
    p.add_argument("--poll-ms", type=float, default=10.0)
    return start_script(p)


def _build_scene(args, demo) -> tuple[ViewRig, int]:
    """The benchmark scene (NeAR asset, studio HDRI, orbit camera) and its viewport rig; returns the
    rig and the asset's voxel count."""
    import bpy

    from near_blender.render.camera import orbit_camera

    scene, objs, tris, _, coords, tmp = demo.bench_scene(
        args.model, args.hdri, "near-bench-viewport-", near_only=True
    )
    scene.near.preview_scale = str(args.scale)
    demo.camera_object(scene, orbit_camera(30.0, 15.0, 2.2, 40.0, args.width, args.height))
    return ViewRig(scene, bpy.context.evaluated_depsgraph_get(), args.width, args.height), int(len(coords))


def _draw_until_final(session, rec: Recorder, rig: ViewRig, rv3d, poll_ms: float, t_change: float,
                      callbacks: list[float]) -> tuple[float, float]:  # fmt: skip
    """Call ``view_draw`` every ``poll_ms`` (Blender's redraw timer) until the final frame of the
    latest snapshot is shown, timing each call into ``callbacks``; returns the seconds from the
    camera change to the first and to the final frame of that view."""
    serial = session.snapshots.serial
    t_first = None
    while True:
        time.sleep(poll_ms / 1000)
        t0 = time.perf_counter()
        session.draw(rec, rig.context(rv3d), rig.dg)
        callbacks.append(time.perf_counter() - t0)
        shown = rec.frames[-1] if rec.frames else None
        if shown is not None and shown.serial == serial:
            if t_first is None:
                t_first = time.perf_counter() - t_change
            if shown.final:
                return t_first, time.perf_counter() - t_change
        if time.perf_counter() - t_change > 600:
            raise RuntimeError("the viewport worker did not finish a frame in 600 s")


def _time_worker_path(V, rig: ViewRig, steps: int, poll_ms: float) -> dict:
    """Today's viewport: callbacks snapshot, a worker renders; per camera change the callbacks' times
    and the latency to the first (coarse) and final frame."""
    rec = Recorder()
    session = V.ViewportSession(present=rec)
    session.draw(rec, rig.context(rig.view(0.0)), rig.dg)  # warm-up: model load, asset encode
    session.worker.wait_idle(timeout=600)
    callbacks, first, final = [], [], []
    for k in range(1, steps + 1):
        rv3d = rig.view(5.0 * k)
        t_change = time.perf_counter()
        t0 = time.perf_counter()
        session.update(rec, rig.context(rv3d), rig.dg)
        session.draw(rec, rig.context(rv3d), rig.dg)
        callbacks.append(time.perf_counter() - t0)
        t_first, t_final = _draw_until_final(session, rec, rig, rv3d, poll_ms, t_change, callbacks)
        first.append(t_first)
        final.append(t_final)
    session.close()
    return {"callback_ms": [c * 1e3 for c in callbacks], "first_frame_s": first, "final_frame_s": final,
            "status": rec.status, "counters": vars(session.worker.counters)}  # fmt: skip


def _time_sync_path(V, rig: ViewRig, steps: int, scale: int) -> list[float]:
    """The previous viewport (everything inside ``view_draw``, world read included): seconds per frame."""
    V.render_view_now(rig.dg, rig.region, rig.view(0.0), scale)  # same warm-up
    sync = []
    for k in range(1, steps + 1):
        rv3d = rig.view(5.0 * k + 2.5)  # other views: no lighting tokens cached from the worker path
        t0 = time.perf_counter()
        pixels, error = V.render_view_now(rig.dg, rig.region, rv3d, scale)
        sync.append(time.perf_counter() - t0)
        if error:
            raise RuntimeError(error)
    return sync


def main() -> int:
    args, addon = _parse_args()

    import importlib

    import bpy

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    V = importlib.import_module(f"{addon.__name__}.engine.viewport")
    rig, voxels = _build_scene(args, demo)
    worker = _time_worker_path(V, rig, args.steps, args.poll_ms)
    sync = _time_sync_path(V, rig, args.steps, args.scale)
    out = {
        "worker": worker,
        "sync": {"callback_ms": [s * 1e3 for s in sync], "final_frame_s": sync},
        "voxels": voxels, "region": [args.width, args.height], "scale": args.scale,
        "coarse_divisor": V.COARSE_DIVISOR, "blender": bpy.app.version_string,
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: (statistics.median(v) if isinstance(v, list) and v and isinstance(v[0], float) else None)
                      for k, v in worker.items()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
