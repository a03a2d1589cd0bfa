"""Blender-side camera-fitting benchmark (run by ``near bench camera-fit``).

For held-out procedural assets of the shipped model's data, a Cycles render's alpha is the photo;
the prior is the asset's mesh. From the true camera orbited by 10 degrees about a seeded axis and
moved 10% further away, ``fit_camera`` runs and the errors of the fitted camera are recorded; then
the same from the 16 automatic guesses (no start camera).

    python operators/demo/bench_camera_fit.py --json out.json [--size 160] [--assets 7,36]
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "engine"))
from batch import start_script  # noqa: E402

HELD_OUT = (7, 13, 15, 19, 20, 22, 36, 37, 42)  # v1 indices held out of the shipped model's training


def main() -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--assets", default=",".join(str(i) for i in HELD_OUT))
    p.add_argument("--guesses", type=int, default=3, help="assets also fitted from the automatic guesses")
    args, addon = start_script(p)
    import bpy

    from near_blender.data.camera_fit import (
        camera_error,
        cloud_from_triangles,
        fit_camera,
        orbit_guesses,
        orbited,
        silhouette_iou,
    )  # fmt: skip
    from near_blender.data.config import DatagenConfig
    from near_blender.data.procedural import procedural_spec
    from near_blender.data.sampling import make_camera

    assets = importlib.import_module(f"{addon.__name__}.operators.datagen.assets")
    render = importlib.import_module(f"{addon.__name__}.operators.datagen.render")
    lighting = importlib.import_module(f"{addon.__name__}.operators.datagen.lighting")
    cfg = DatagenConfig(engine="cycles", resolution=args.size, samples=4, denoise=False, homog_views=0,
                        shaded_views=0, cond_views=0, input_views=0, relit_views=0, relit_lights=0)  # fmt: skip
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="near-bench-camera-fit-"))
    for k, index in enumerate(int(i) for i in args.assets.split(",")):
        spec = procedural_spec(index, 0)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        objs = assets.build_procedural(spec, scene, f"asset-{index}")
        _, tris = assets.normalize(objs, scene, "asset")
        render.configure_scene(scene, cfg)
        rng = np.random.default_rng(index)
        true = make_camera(float(rng.uniform(0, 360)), float(rng.uniform(5, 35)), 2.2, 40.0, args.size)
        render.place_camera(true, render.ensure_camera(scene), scene)
        lighting.Lighting(scene, {}).apply({"type": "uniform", "color": [1, 1, 1], "strength": 1.0})
        alpha = render.render_view(scene, tmp / f"{index}.exr")["Combined"][..., 3]
        cloud = cloud_from_triangles(tris)
        axis = rng.normal(size=3)
        start = orbited(true, cloud.centre, np.deg2rad(10.0) * axis / np.linalg.norm(axis), 1.1)
        runs = [("perturbed start (10 deg, +10 %)", [start])]
        if k < args.guesses:
            runs.append(("16 guesses, no start camera", orbit_guesses(cloud, true)))
        for label, starts in runs:
            t0 = time.perf_counter()
            fit = fit_camera(cloud, alpha, starts)
            seconds = time.perf_counter() - t0
            angle, dist = camera_error(fit.camera, true, cloud.centre)
            rows.append({"asset": f"proc-{index:04d}-{spec['shape']}", "start": label, "start_iou": fit.start_iou,
                         "iou": fit.iou, "true_iou": silhouette_iou(cloud, true, alpha), "angle_deg": angle,
                         "distance_error": dist, "seconds": seconds})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    Path(args.json).write_text(
        json.dumps({"rows": rows, "size": args.size, "blender": bpy.app.version_string})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
