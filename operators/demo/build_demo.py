"""Blender side of ``near demo``: build the demo .blend and render it with NeAR and EEVEE Next.

1. A held-out procedural asset (the first library asset whose id the dataset split holds out),
   lit by the data generator's random area lights (the paper's ``six_area`` / ``hemisphere_area``
   modes), rendered by EEVEE with a transparent film: the input image ``input.png``.
2. Its mesh is the geometry prior: voxelized, then stage 1 turns (image, voxels) into the LH-SLAT
   sidecar and a NeAR asset object is created (what File > Import > Image as NeAR Asset does).
3. F12 under three studio HDRIs x two camera views, with NeAR (the asset) and with EEVEE Next (the
   mesh, the reference): ``{engine}_{hdri}_{view}.png`` (AgX view transform) and ``.exr`` (multilayer
   passes). ``demo.json`` lists the files and the render times.

    python operators/demo/build_demo.py --out out/demo --model DIR [--resolution 256 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
from batch import EVENT_PREFIX, _bootstrap, ensure_registered  # noqa: E402

HDRIS = ("courtyard", "sunset", "city")
VIEWS = {"front": (-60.0, 20.0), "back": (120.0, 35.0)}  # (yaw, pitch) degrees, radius 2.2, FOV 40


def emit(**ev) -> None:
    print(EVENT_PREFIX + json.dumps(ev), flush=True)


def held_out_procedural(seed: int, fraction: float = 0.2) -> tuple[str, dict]:
    """(asset id, spec) of the first procedural library asset that the dataset split holds out."""
    from near_blender.data.dataset import is_held_out
    from near_blender.data.procedural import procedural_spec

    for i in range(10_000):
        spec = procedural_spec(i, seed)
        asset_id = f"proc-{i:04d}-{spec['shape']}"
        if is_held_out(asset_id, fraction):
            return asset_id, spec
    raise RuntimeError("no held-out procedural asset")


def demo_asset(addon, scene, out: Path, res: int, seed: int = 0, stage1_steps: int = 0) -> dict:
    """Steps 1 and 2 (module docstring) in ``scene``: the held-out procedural mesh, its input image
    ``out/input.png`` and its NeAR asset (sidecar ``out/input.near.npz``). Returns ``asset_id``,
    ``spec``, ``objs`` (the mesh objects), ``coords``, ``asset`` (the object), ``pipe``, ``input_s``,
    ``stage1_s``. ``near bench bake`` bakes this asset too."""
    import importlib

    import bpy
    import numpy as np

    from near_blender.data.sampling import hemisphere_area_lights, make_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    imp = importlib.import_module(f"{addon.__name__}.operators.import_image")
    lighting = importlib.import_module(f"{addon.__name__}.operators.datagen.lighting")
    model_manager = importlib.import_module(f"{addon.__name__}.engine.model_manager")
    r = scene.render
    asset_id, spec = held_out_procedural(seed)
    objs, tris = demo.procedural_mesh(scene, spec, asset_id)

    # 1. the input image: EEVEE, random area lights, black world, transparent film
    rng = np.random.default_rng([seed, 1234])
    cam_in = make_camera(-40.0, 25.0, 2.2, 40.0, res)
    demo.camera_object(scene, cam_in)
    cam_dir = -np.asarray(cam_in.viewmat)[2, :3]  # origin -> camera
    lights = hemisphere_area_lights(rng, cam_dir, 1.0)
    light = lighting.Lighting(scene, {})
    light.apply({"type": "lights", "world_color": [0.0, 0.0, 0.0], "lights": lights})
    r.engine = "BLENDER_EEVEE"
    r.film_transparent = True
    r.image_settings.media_type = "IMAGE"
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"  # the input photo: plain sRGB
    t0 = time.perf_counter()
    bpy.ops.render.render(scene=scene.name)
    bpy.data.images["Render Result"].save_render(filepath=str(out / "input.png"), scene=scene)
    input_s = time.perf_counter() - t0
    emit(event="render", done=1, name="input", seconds=input_s)
    light.close()
    scene.view_settings.view_transform = "AgX"
    r.film_transparent = False
    r.image_settings.color_mode = "RGB"

    # 2. import as a NeAR asset (stage 1 on the mesh's voxels)
    coords, matrix = imp.voxelize_prior(tris)
    rgba = imp.read_image_rgba(out / "input.png")
    pipe = model_manager.get_pipeline()
    t0 = time.perf_counter()
    sidecar = out / "input.near.npz"
    camera = (np.asarray(cam_in.viewmat) @ matrix, np.asarray(cam_in.K))  # the input's camera
    imp.run_stage1(pipe, rgba, coords, sidecar, seed=seed, steps=stage1_steps or None,
                   progress=lambda f, m: emit(event="stage1", fraction=f, message=m),
                   camera=camera if pipe.needs_input_camera else None)  # fmt: skip
    stage1_s = time.perf_counter() - t0
    asset = imp.create_asset_object(bpy.context, "input", bpy.path.relpath(str(sidecar)), matrix,
                                    str(out / "input.png"), str(pipe.args.get("model_id", "")))  # fmt: skip
    return {"asset_id": asset_id, "spec": spec, "objs": objs, "coords": coords, "asset": asset, "pipe": pipe,
            "input_s": input_s, "stage1_s": stage1_s}  # fmt: skip


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--eevee-samples", type=int, default=16)
    p.add_argument("--hdris", nargs="+", default=list(HDRIS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage1-steps", type=int, default=0, help="0 = the model's default")
    return p.parse_args(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:])


def _new_demo_file(out: Path, res: int, eevee_samples: int):
    """An empty factory scene saved as ``out/demo.blend`` (no backups), square ``res`` renders, AgX."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0  # no demo.blend1 backups
    scene = bpy.context.scene
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))
    r = scene.render
    r.resolution_x = r.resolution_y = res
    r.resolution_percentage = 100
    scene.eevee.taa_render_samples = eevee_samples
    scene.view_settings.view_transform = "AgX"
    return scene


def _render_engine(scene, session, engine: str, objs, out: Path, name: str) -> float:
    """F12 with ``engine`` (NeAR renders the asset, EEVEE the meshes), saved as ``out/name.png`` (AgX)
    and ``out/name.exr`` (multilayer, float32); returns the render's seconds."""
    import bpy

    from near_blender import NearError

    r = scene.render
    r.engine = engine
    scene.view_layers[0].use_pass_z = engine != "NEAR"  # NeAR writes its own Depth pass
    for o in objs:
        o.hide_render = engine == "NEAR"
    session.last_error = None
    t0 = time.perf_counter()
    bpy.ops.render.render(scene=scene.name)
    dt = time.perf_counter() - t0
    if engine == "NEAR" and session.last_error:
        raise NearError(session.last_error)
    result = bpy.data.images["Render Result"]
    r.image_settings.media_type = "IMAGE"
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGB"
    result.save_render(filepath=str(out / f"{name}.png"), scene=scene)
    r.image_settings.media_type = "MULTI_LAYER_IMAGE"
    r.image_settings.color_depth = "32"
    result.save_render(filepath=str(out / f"{name}.exr"), scene=scene)
    return dt


def _render_all(addon, scene, objs, out: Path, hdris: list[str], res: int) -> list[dict]:
    """Step 3 (module docstring): NeAR and EEVEE under each HDRI and view; returns the renders'
    records (engine, hdri, view, png, exr, seconds). The meshes are visible again afterwards."""
    import importlib

    import bpy

    from near_blender.data.sampling import make_camera

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    session = importlib.import_module(f"{addon.__name__}.engine.session")
    world = demo.hdri_world(scene, hdris[0])
    bpy.ops.wm.save_mainfile()
    renders = []
    for hdri in hdris:
        demo.set_hdri(world, hdri)
        for view, (yaw, pitch) in VIEWS.items():
            demo.camera_object(scene, make_camera(yaw, pitch, 2.2, 40.0, res))
            for engine in ("NEAR", "BLENDER_EEVEE"):
                name = f"{'near' if engine == 'NEAR' else 'eevee'}_{hdri}_{view}"
                dt = _render_engine(scene, session, engine, objs, out, name)
                renders.append({"engine": engine, "hdri": hdri, "view": view, "png": f"{name}.png",
                                "exr": f"{name}.exr", "seconds": dt})  # fmt: skip
                emit(event="render", done=1 + len(renders), name=name, seconds=dt)
    for o in objs:
        o.hide_render = False
    return renders


def main() -> int:
    args = _parse_args()
    os.environ["NEAR_MODEL"] = args.model

    import bpy

    addon = _bootstrap()
    ensure_registered()

    from near_blender import NearError

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    res = args.resolution
    n_renders = 1 + 2 * len(args.hdris) * len(VIEWS)
    emit(event="start", renders=n_renders)
    try:
        scene = _new_demo_file(out, res, args.eevee_samples)
        made = demo_asset(addon, scene, out, res, args.seed, args.stage1_steps)
        renders = _render_all(addon, scene, made["objs"], out, args.hdris, res)
        scene.render.engine = "NEAR"
        bpy.ops.wm.save_mainfile()
        record = {"asset_id": made["asset_id"], "spec": made["spec"], "voxels": int(len(made["coords"])),
                  "resolution": res, "eevee_samples": args.eevee_samples, "input": "input.png",
                  "input_seconds": made["input_s"], "stage1_seconds": made["stage1_s"],
                  "model_id": str(made["pipe"].args.get("model_id", "")), "asset_object": made["asset"].name,
                  "blend": "demo.blend", "renders": renders, "hdris": list(args.hdris), "views": list(VIEWS),
                  "clip_end": float(scene.camera.data.clip_end)}  # fmt: skip
        (out / "demo.json").write_text(json.dumps(record, indent=1))
    except NearError as e:
        print(f"near demo: error: {e}", file=sys.stderr, flush=True)
        return 2
    emit(event="end", done=n_renders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
