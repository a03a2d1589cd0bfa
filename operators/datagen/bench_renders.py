"""Blender-side timing of the data renders (run by ``near bench datagen`` in a subprocess).

For one engine and several resolutions it times, per view, the generator's real path (one render
with every pass, conversion to the view file, shadow pass) against a straightforward baseline that
renders once per pass (Combined, Depth, Normal, the three material AOVs, diffuse light), with the
same camera and environment lighting. Writes a JSON report to ``--json``.

    python operators/datagen/bench_renders.py --engine cycles --resolutions 128 512 --json out.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from headless import PACKAGE, _bootstrap  # noqa: E402

# the baseline renders once per pass: view-layer pass properties, or a material AOV
BASELINE_PASSES: dict[str, tuple[str, ...]] = {
    "combined": (),
    "depth": ("use_pass_z",),
    "normal": ("use_pass_normal",),
    "aov:base_color": (),
    "aov:roughness": (),
    "aov:metallic": (),
    "diffuse light": ("use_pass_diffuse_direct", "use_pass_diffuse_indirect", "use_pass_diffuse_color"),
}
PASS_PROPS = ("use_pass_z", "use_pass_normal", "use_pass_diffuse_direct", "use_pass_diffuse_indirect",
              "use_pass_diffuse_color")  # fmt: skip


def only_pass(view_layer, name: str) -> None:
    """Leave Combined plus the one pass ``name`` enabled (Combined is always rendered)."""
    from near_blender.data.views import AOVS

    for prop in PASS_PROPS:
        setattr(view_layer, prop, False)
    for a in list(view_layer.aovs):
        view_layer.aovs.remove(a)
    for prop in BASELINE_PASSES[name]:
        setattr(view_layer, prop, True)
    if name.startswith("aov:"):
        a = view_layer.aovs.add()
        a.name = name[4:]
        a.type = AOVS[a.name]


def main() -> int:
    import bpy

    _bootstrap()
    from near_blender.data.config import preset_config
    from near_blender.data.procedural import parse_procedural_spec
    from near_blender.data.sampling import make_camera
    from near_blender.data.shadow import shadow_from_passes
    from near_blender.data.views import SET_PASSES, diffuse_light, view_from_passes, write_view

    assets, materials, lighting, render = (
        importlib.import_module(f"{PACKAGE}.operators.datagen.{n}")
        for n in ("assets", "materials", "lighting", "render")
    )
    p = argparse.ArgumentParser()
    p.add_argument("--engine", choices=("eevee", "cycles"), required=True)
    p.add_argument("--resolutions", type=int, nargs="+", default=[128, 512])
    p.add_argument("--samples", type=int, default=None, help="default: the tiny preset's")
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--baseline-views", type=int, default=1)
    p.add_argument("--json", required=True)
    args = p.parse_args(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:])

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    spec = parse_procedural_spec("proc:subdiv_suzanne,base_color=0.8/0.5/0.2,color2=0.1/0.2/0.7,texture=noise,"
                                 "roughness=0.4,roughness2=0.9,metallic=0")  # fmt: skip
    objs = assets.build_procedural(spec, scene, "bench")
    assets.normalize(objs, scene, "bench")
    materials.material_report(objs)
    envs = {e.name: e for e in lighting.load_envmaps(lighting.find_envmaps(None)) if e.ok}
    names = sorted(envs)
    light = lighting.Lighting(scene, envs)
    cam_obj = render.ensure_camera(scene)
    tmp = Path(tempfile.mkdtemp(prefix="near-bench-"))

    def configure(res: int) -> None:
        render.configure_scene(
            scene, preset_config("tiny", args.engine, resolution=res, samples=args.samples)
        )

    def place(res: int, i: int):
        render.place_camera(make_camera(30.0 + 50 * i, 15.0, 2.0, 40.0, res), cam_obj, scene)
        spec = {"type": "envmap", "envmap": names[i % len(names)], "rotation_z": 0.7 * i, "strength": 1.0}
        return light.apply(spec), envs[spec["envmap"]]

    def one_view(res: int, i: int) -> float:
        """The generator's path: one render with every pass -> the view file, shadow included."""
        env, envmap = place(res, i)
        t0 = time.perf_counter()
        passes = render.render_view(scene, tmp / f".tmp-{res}-{i}.exr")
        view = view_from_passes(passes, SET_PASSES["relit"])
        view["shadow"], view["shadow_weight"] = shadow_from_passes(
            diffuse_light(passes), passes["Normal"][..., :3], passes["Diffuse Color"][..., :3],
            view["rgba"][..., 3], env, envmap.irradiance())  # fmt: skip
        write_view(tmp / f"view-{res}-{i}.exr", view)
        return time.perf_counter() - t0

    def baseline_view(res: int, i: int) -> float:
        """One render (and file) per pass, same camera and lighting."""
        place(res, i)
        total = 0.0
        for name in BASELINE_PASSES:
            only_pass(scene.view_layers[0], name)
            t0 = time.perf_counter()
            out = tmp / f".tmp-base-{res}-{i}-{name.replace(':', '_').replace(' ', '_')}.exr"
            scene.render.filepath = str(out)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            total += time.perf_counter() - t0
        configure(res)
        return total

    rows = []
    for res in args.resolutions:
        configure(res)
        samples = scene.cycles.samples if args.engine == "cycles" else scene.eevee.taa_render_samples
        t0 = time.perf_counter()
        one_view(res, 99)  # warm-up: EEVEE compiles its shaders on the first frame of a process
        warm = time.perf_counter() - t0
        multi = [one_view(res, i) for i in range(args.views)]
        base = [baseline_view(res, i) for i in range(args.baseline_views)]
        m, b = sum(multi) / len(multi), sum(base) / len(base)
        rows.append({"engine": args.engine, "resolution": res, "samples": samples, "views": len(multi),
                     "s_per_view": m, "baseline_s_per_view": b, "baseline_renders": len(BASELINE_PASSES),
                     "speedup": b / m, "warmup_s": warm})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
