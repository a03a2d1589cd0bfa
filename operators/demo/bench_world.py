"""Blender-side timing of world baking (run by ``near bench world``).

The benchmarks' scene (the bundled model's Suzanne asset) at 256², lit by (a) the studio HDRI, read
exactly, and (b) a Sky Texture, which NeAR bakes with Cycles: the bake alone at the default size,
in this Blender and in a separate Blender process (what F12 does, since a render cannot start
another), the first F12 under the sky (bake included) and the next ones (cached), beside F12s under
the plain HDRI in the same process.

    python operators/demo/bench_world.py --model DIR --json out.json
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
from batch import bench_parser, start_script  # noqa: E402


def main() -> int:
    p = bench_parser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=3)
    args, addon = start_script(p)
    import bpy

    from near_blender.render.camera import orbit_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    wb = importlib.import_module(f"{addon.__name__}.engine.world_bake")
    scene, objs, _, _, coords, tmp = demo.bench_scene(
        args.model, args.hdri, "near-bench-world-", near_only=True
    )
    demo.camera_object(scene, orbit_camera(30.0, 15.0, 2.2, 40.0, args.size, args.size))
    hdri_world = scene.world
    sky = bpy.data.worlds.new("Sky")
    sky.node_tree.links.new(sky.node_tree.nodes.new("ShaderNodeTexSky").outputs["Color"],
                            sky.node_tree.nodes["Background"].inputs["Color"])  # fmt: skip

    def f12() -> float:
        t0 = time.perf_counter()
        bpy.ops.render.render(scene=scene.name)
        return time.perf_counter() - t0

    baker = wb.world_baker()
    t0 = time.perf_counter()
    wb.bake_world(sky)
    bake_here = time.perf_counter() - t0
    t0 = time.perf_counter()
    wb.bake_world(sky, in_render=True)
    bake_process = time.perf_counter() - t0
    scene.world = hdri_world
    f12()  # warm-up: model load, asset encode
    hdri = [f12() for _ in range(args.frames)]
    scene.world = sky
    bakes = baker.bakes
    first = f12()
    cached = [f12() for _ in range(args.frames)]
    out = {"bake_here_s": bake_here, "bake_process_s": bake_process, "hdri_f12_s": hdri, "sky_first_f12_s": first,
           "sky_cached_f12_s": cached, "bakes_during_f12": baker.bakes - bakes, "size": args.size,
           "bake_size": list(wb.BAKE_SIZE), "bake_samples": wb.BAKE_SAMPLES, "voxels": int(len(coords)),
           "blender": bpy.app.version_string}  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: (statistics.median(v) if isinstance(v, list) else v) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
