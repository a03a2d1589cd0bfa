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
from headless import PACKAGE, _bootstrap, _script_args  # noqa: E402

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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--engine", choices=("eevee", "cycles"), required=True)
    p.add_argument("--resolutions", type=int, nargs="+", default=[128, 512])
    p.add_argument("--samples", type=int, default=None, help="default: the tiny preset's")
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--baseline-views", type=int, default=1)
    p.add_argument("--json", required=True)
    return p.parse_args(_script_args(sys.argv))


class Bench:
    """The timed scene: one textured procedural asset, the bundled environment maps, a camera."""

    def __init__(self, args: argparse.Namespace) -> None:
        import bpy

        from near_blender.data.procedural import parse_procedural_spec

        assets, materials, lighting, self.render = (
            importlib.import_module(f"{PACKAGE}.operators.datagen.{n}")
            for n in ("assets", "materials", "lighting", "render")
        )
        self.args = args
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = scene = bpy.context.scene
        spec = parse_procedural_spec("proc:subdiv_suzanne,base_color=0.8/0.5/0.2,color2=0.1/0.2/0.7,texture=noise,"
                                     "roughness=0.4,roughness2=0.9,metallic=0")  # fmt: skip
        objs = assets.build_procedural(spec, scene, "bench")
        assets.normalize(objs, scene, "bench")
        materials.material_report(objs)
        self.envs = {e.name: e for e in lighting.load_envmaps(lighting.find_envmaps(None)) if e.ok}
        self.names = sorted(self.envs)
        self.light = lighting.Lighting(scene, self.envs)
        self.cam_obj = self.render.ensure_camera(scene)
        self.tmp = Path(tempfile.mkdtemp(prefix="near-bench-"))

    def configure(self, res: int) -> None:
        from near_blender.data.config import preset_config

        self.render.configure_scene(
            self.scene, preset_config("tiny", self.args.engine, resolution=res, samples=self.args.samples)
        )

    def place(self, res: int, i: int):
        from near_blender.data.sampling import make_camera

        self.render.place_camera(make_camera(30.0 + 50 * i, 15.0, 2.0, 40.0, res), self.cam_obj, self.scene)
        spec = {
            "type": "envmap",
            "envmap": self.names[i % len(self.names)],
            "rotation_z": 0.7 * i,
            "strength": 1.0,
        }
        return self.light.apply(spec), self.envs[spec["envmap"]]

    def one_view(self, res: int, i: int) -> float:
        """The generator's path: one render with every pass -> the view file, shadow included."""
        from near_blender.data.shadow import shadow_from_passes
        from near_blender.data.views import SET_PASSES, diffuse_light, view_from_passes, write_view

        env, envmap = self.place(res, i)
        t0 = time.perf_counter()
        passes = self.render.render_view(self.scene, self.tmp / f".tmp-{res}-{i}.exr")
        view = view_from_passes(passes, SET_PASSES["relit"])
        view["shadow"], view["shadow_weight"] = shadow_from_passes(
            diffuse_light(passes), passes["Normal"][..., :3], passes["Diffuse Color"][..., :3],
            view["rgba"][..., 3], env, envmap.irradiance())  # fmt: skip
        write_view(self.tmp / f"view-{res}-{i}.exr", view)
        return time.perf_counter() - t0

    def baseline_view(self, res: int, i: int) -> float:
        """One render (and file) per pass, same camera and lighting."""
        import bpy

        self.place(res, i)
        total = 0.0
        for name in BASELINE_PASSES:
            only_pass(self.scene.view_layers[0], name)
            t0 = time.perf_counter()
            out = self.tmp / f".tmp-base-{res}-{i}-{name.replace(':', '_').replace(' ', '_')}.exr"
            self.scene.render.filepath = str(out)
            bpy.ops.render.render(write_still=True, scene=self.scene.name)
            total += time.perf_counter() - t0
        self.configure(res)
        return total

    def row(self, res: int) -> dict:
        """One resolution: a warm-up view, then the generator's views against the baseline's."""
        args, scene = self.args, self.scene
        self.configure(res)
        samples = scene.cycles.samples if args.engine == "cycles" else scene.eevee.taa_render_samples
        t0 = time.perf_counter()
        self.one_view(res, 99)  # warm-up: EEVEE compiles its shaders on the first frame of a process
        warm = time.perf_counter() - t0
        multi = [self.one_view(res, i) for i in range(args.views)]
        base = [self.baseline_view(res, i) for i in range(args.baseline_views)]
        m, b = sum(multi) / len(multi), sum(base) / len(base)
        return {"engine": args.engine, "resolution": res, "samples": samples, "views": len(multi),
                "s_per_view": m, "baseline_s_per_view": b, "baseline_renders": len(BASELINE_PASSES),
                "speedup": b / m, "warmup_s": warm}  # fmt: skip


def main() -> int:
    import bpy  # noqa: F401 -- Blender first, then the package

    _bootstrap()
    args = parse_args()
    bench = Bench(args)
    rows = []
    for res in args.resolutions:
        rows.append(bench.row(res))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
