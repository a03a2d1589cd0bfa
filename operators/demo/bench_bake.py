"""Blender side of ``near bench bake``: the demo asset (``build_demo.demo_asset``: the held-out
procedural mesh, its input image under random area lights, stage 1) baked onto its own mesh with
Object > NeAR > Bake PBR to Mesh at each texture size, then rendered by Cycles under a studio HDRI
beside NeAR's F12 of the asset (same camera, same HDRI) and Cycles' render of the mesh with its
true material. Writes the AgX PNGs and multilayer EXRs (Depth for the object mask) of every render
and a JSON of the files and times; ``near_blender/bench/bake.py`` scores them.

    python operators/demo/bench_bake.py --model DIR --json out.json [--sizes 512 1024] [--out DIR]
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
sys.path.insert(0, str(ROOT / "operators" / "demo"))
from batch import bench_parser, start_script  # noqa: E402

VIEWS = {"front": (-60.0, 20.0), "back": (120.0, 35.0)}  # as near demo: (yaw, pitch), radius 2.2, FOV 40


def main() -> int:
    p = bench_parser()
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--samples", type=int, default=32, help="Cycles samples")
    p.add_argument("--out", default=None, help="folder for the renders (default: a new temporary one)")
    args, addon = start_script(p)
    import bpy
    from build_demo import demo_asset

    from near_blender.data.sampling import make_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    out = Path(args.out or tempfile.mkdtemp(prefix="near-bench-bake-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0
    scene = bpy.context.scene
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "bench.blend"))
    r = scene.render
    r.resolution_x = r.resolution_y = args.resolution
    r.resolution_percentage = 100
    scene.view_settings.view_transform = "AgX"
    made = demo_asset(addon, scene, out, args.resolution)
    objs, asset = made["objs"], made["asset"]
    if len(objs) > 1:  # one mesh to bake onto
        with bpy.context.temp_override(active_object=objs[0], selected_editable_objects=objs):
            bpy.ops.object.join()
    mesh = objs[0]
    demo.hdri_world(scene, args.hdri)
    scene.cycles.samples = args.samples
    scene.cycles.device = "CPU"
    scene.view_layers[0].use_pass_z = True
    renders = []

    def render(engine: str, name: str, view: str) -> None:
        r.engine = engine
        mesh.hide_render = engine == "NEAR"
        t0 = time.perf_counter()
        bpy.ops.render.render(scene=scene.name)
        dt = time.perf_counter() - t0
        result = bpy.data.images["Render Result"]
        r.image_settings.media_type, r.image_settings.file_format, r.image_settings.color_mode = (
            "IMAGE",
            "PNG",
            "RGB",
        )
        result.save_render(filepath=str(out / f"{name}_{view}.png"), scene=scene)
        r.image_settings.media_type, r.image_settings.color_depth = "MULTI_LAYER_IMAGE", "32"
        result.save_render(filepath=str(out / f"{name}_{view}.exr"), scene=scene)
        renders.append({"name": name, "view": view, "png": f"{name}_{view}.png", "exr": f"{name}_{view}.exr",
                        "seconds": dt})  # fmt: skip
        print(f"bench_bake: {name} {view} {dt:.1f} s", flush=True)

    def each_view(engine: str, name: str) -> None:
        for view, (yaw, pitch) in VIEWS.items():
            demo.camera_object(scene, make_camera(yaw, pitch, 2.2, 40.0, args.resolution))
            render(engine, name, view)

    each_view("NEAR", "near")
    each_view("CYCLES", "truth")  # the mesh with its own material
    bakes = []
    for size in args.sizes:
        bpy.ops.object.select_all(action="DESELECT")
        for o in (mesh, asset):
            o.select_set(True)
        bpy.context.view_layer.objects.active = mesh
        t0 = time.perf_counter()
        assert bpy.ops.near.bake_pbr(size=size) == {"FINISHED"}
        bakes.append({"size": size, "seconds": time.perf_counter() - t0})
        print(f"bench_bake: bake {size} {bakes[-1]['seconds']:.1f} s", flush=True)
        each_view("CYCLES", f"baked{size}")
    record = {"renders": renders, "bakes": bakes, "views": list(VIEWS), "hdri": args.hdri, "out": str(out),
              "resolution": args.resolution, "samples": args.samples, "asset_id": made["asset_id"],
              "voxels": int(len(made["coords"])), "faces": len(mesh.data.polygons),
              "clip_end": float(scene.camera.data.clip_end), "blender": bpy.app.version_string}  # fmt: skip
    Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
