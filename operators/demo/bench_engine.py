"""Blender-side timing of the NeAR engine against EEVEE Next (run by ``near bench engine``).

One scene: a procedural mesh with a Principled material (what EEVEE renders), the NeAR asset on
the same voxels (what NeAR renders; the mesh is hidden from NeAR's render), a bundled studio HDRI
world and one camera orbiting the object a few degrees per frame. Per engine and resolution: the
first frame (warm-up: model load and asset encode for NeAR, shader compilation for EEVEE) and the
median of the following frames (steady state), each a full F12 (``render.render``, no file written).

    python operators/demo/bench_engine.py --model DIR --resolutions 256 512 --json out.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
from batch import bench_parser, cache_stats, start_script  # noqa: E402


def main() -> int:
    p = bench_parser()
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    p.add_argument("--frames", type=int, default=3, help="steady-state frames after the first")
    p.add_argument("--eevee-samples", type=int, default=16)
    args, addon = start_script(p)

    import importlib

    import bpy

    from near_blender.render.camera import orbit_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    session = importlib.import_module(f"{addon.__name__}.engine.session")

    scene, objs, tris, asset, coords, tmp = demo.bench_scene(args.model, args.hdri, "near-bench-engine-")
    r = scene.render
    r.resolution_percentage = 100
    r.film_transparent = False
    scene.eevee.taa_render_samples = args.eevee_samples

    def set_engine(engine: str) -> None:
        r.engine = engine
        for o in objs:  # NeAR renders the asset, EEVEE the mesh
            o.hide_render = engine == "NEAR"

    def frame(res: int, i: int) -> float:
        # each resolution orbits its own arc, so no frame reuses another one's lighting tokens
        arc = 90.0 * args.resolutions.index(res)
        demo.camera_object(scene, orbit_camera(30.0 + arc + 5.0 * i, 15.0, 2.2, 40.0, res, res))
        session.last_error = None
        t0 = time.perf_counter()
        bpy.ops.render.render(scene=scene.name)
        dt = time.perf_counter() - t0
        if r.engine == "NEAR" and session.last_error:
            raise RuntimeError(session.last_error)
        return dt

    rows = []
    for engine in ("NEAR", "BLENDER_EEVEE"):
        set_engine(engine)
        for res in args.resolutions:
            before = cache_stats()
            warm = frame(res, 0)
            steady = [frame(res, i) for i in range(1, args.frames + 1)]
            after = cache_stats()
            row = {"engine": engine, "resolution": res, "first_frame_s": warm, "frames": len(steady),
                   "s_per_frame": statistics.median(steady), "min_s": min(steady), "times_s": steady,
                   "samples": args.eevee_samples if engine != "NEAR" else None,
                   "cache": {k: after.get(k, 0) - before.get(k, 0) for k in after}}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"rows": rows, "voxels": int(len(coords)), "triangles": int(len(tris)), "hdri": args.hdri,
           "blender": bpy.app.version_string}  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
