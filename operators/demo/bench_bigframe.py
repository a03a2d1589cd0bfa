"""Blender-side peak memory of one large NeAR F12 (run by ``near bench bigframe``).

The benchmarks' scene (the bundled model's Suzanne asset under the studio HDRI): a warm-up F12 at
256², then one F12 at ``--size`` ² (tiled by the engine), each timed, with this process's peak
resident memory after each (``ru_maxrss``).

    python operators/demo/bench_bigframe.py --model DIR --size 8000 --json out.json
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
from batch import bench_parser, start_script  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB -> GB (Linux)


def main() -> int:
    p = bench_parser()
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--combined-only", action="store_true", help="View Layer > NeAR Passes all off")
    args, addon = start_script(p)
    import bpy

    from near_blender.render.camera import orbit_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    session = importlib.import_module(f"{addon.__name__}.engine.session")
    scene, objs, _, _, coords, _ = demo.bench_scene(
        args.model, args.hdri, "near-bench-bigframe-", near_only=True
    )
    if args.combined_only:
        settings = scene.view_layers[0].near_passes
        for name in ("depth", "alpha", "base_color", "roughness", "metallic", "shadow", "normal"):
            setattr(settings, f"use_{name}", False)

    def f12(size: int) -> float:
        demo.camera_object(scene, orbit_camera(30.0, 15.0, 2.2, 40.0, size, size))
        session.last_error = None
        t0 = time.perf_counter()
        bpy.ops.render.render(scene=scene.name)
        if session.last_error:
            raise RuntimeError(session.last_error)
        return time.perf_counter() - t0

    warm_s = f12(256)
    warm_peak = peak_gb()
    big_s = f12(args.size)
    out = {"size": args.size, "warm_s": warm_s, "warm_peak_gb": warm_peak, "big_s": big_s, "big_peak_gb": peak_gb(),
           "voxels": int(len(coords)), "blender": bpy.app.version_string}  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
