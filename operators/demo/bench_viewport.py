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


def main() -> int:
    p = bench_parser()
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--scale", type=int, default=2, help="Viewport Resolution divisor (1, 2 or 4)")
    p.add_argument("--steps", type=int, default=5, help="camera changes per path")
    p.add_argument("--poll-ms", type=float, default=10.0)
    args, addon = start_script(p)

    import importlib

    import bpy
    import mathutils

    from near_blender.render.camera import orbit_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    V = importlib.import_module(f"{addon.__name__}.engine.viewport")

    scene, objs, tris, _, coords, tmp = demo.bench_scene(
        args.model, args.hdri, "near-bench-viewport-", near_only=True
    )
    scene.near.preview_scale = str(args.scale)
    W, H = args.width, args.height
    demo.camera_object(scene, orbit_camera(30.0, 15.0, 2.2, 40.0, W, H))
    dg = bpy.context.evaluated_depsgraph_get()
    cam = scene.camera
    region = types.SimpleNamespace(width=W, height=H)
    window = cam.calc_matrix_camera(dg, x=W, y=H, scale_x=1, scale_y=1)
    base_view = cam.matrix_world.normalized().inverted()

    def view(step: float):
        turn = mathutils.Matrix.Rotation(math.radians(step), 4, "Z")
        return types.SimpleNamespace(view_matrix=base_view @ turn, window_matrix=window)

    def context(rv3d):
        return types.SimpleNamespace(region=region, region_data=rv3d)

    # -- the worker path -------------------------------------------------------------------------
    rec = Recorder()
    session = V.ViewportSession(present=rec)
    session.draw(rec, context(view(0.0)), dg)  # warm-up: model load, asset encode
    session.worker.wait_idle(timeout=600)
    callbacks, first, final = [], [], []
    for k in range(1, args.steps + 1):
        rv3d = view(5.0 * k)
        t_change = time.perf_counter()
        t0 = time.perf_counter()
        session.update(rec, context(rv3d), dg)
        session.draw(rec, context(rv3d), dg)
        callbacks.append(time.perf_counter() - t0)
        serial = session.snapshots.serial
        t_first = None
        while True:
            time.sleep(args.poll_ms / 1000)
            t0 = time.perf_counter()
            session.draw(rec, context(rv3d), dg)
            callbacks.append(time.perf_counter() - t0)
            shown = rec.frames[-1] if rec.frames else None
            if shown is not None and shown.serial == serial:
                if t_first is None:
                    t_first = time.perf_counter() - t_change
                if shown.final:
                    final.append(time.perf_counter() - t_change)
                    first.append(t_first)
                    break
            if time.perf_counter() - t_change > 600:
                raise RuntimeError("the viewport worker did not finish a frame in 600 s")
    session.close()
    worker = {"callback_ms": [c * 1e3 for c in callbacks], "first_frame_s": first, "final_frame_s": final,
              "status": rec.status, "counters": vars(session.worker.counters)}  # fmt: skip

    # -- the synchronous path (the previous viewport: everything inside view_draw) ----------------
    V.render_view_now(dg, region, view(0.0), args.scale)  # same warm-up
    sync = []
    for k in range(1, args.steps + 1):
        rv3d = view(5.0 * k + 2.5)  # other views: no lighting tokens cached from the worker path
        t0 = time.perf_counter()
        pixels, error = V.render_view_now(dg, region, rv3d, args.scale)
        sync.append(time.perf_counter() - t0)
        if error:
            raise RuntimeError(error)
    out = {
        "worker": worker,
        "sync": {"callback_ms": [s * 1e3 for s in sync], "final_frame_s": sync},
        "voxels": int(len(coords)), "region": [W, H], "scale": args.scale, "coarse_divisor": V.COARSE_DIVISOR,
        "blender": bpy.app.version_string,
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: (statistics.median(v) if isinstance(v, list) and v and isinstance(v[0], float) else None)
                      for k, v in worker.items()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
