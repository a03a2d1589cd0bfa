"""The Blender side of the data generator, in real Blender (bpy module, one session for the module).

Assets and normalization, material AOVs (checked in rendered pixels), environment worlds read
back by the scene bridge, bad inputs, the shadow pass, and the UI operator / temporary scenes.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.config import DatagenConfig
from near_blender.data.procedural import SHAPES, V2_SHAPES, parse_procedural_spec, procedural_spec
from near_blender.data.sources import AssetSource, object_sources
from near_blender.data.views import read_view
from near_blender.data.voxelize import voxelize_triangles
from near_blender.render.exr import write_exr
from tests.bpy_session import bpy, empty_scene, import_addon, studio_hdri

pytestmark = pytest.mark.bpy

addon = import_addon()
assets = importlib.import_module("near_addon.operators.datagen.assets")
materials = importlib.import_module("near_addon.operators.datagen.materials")
lighting = importlib.import_module("near_addon.operators.datagen.lighting")
render = importlib.import_module("near_addon.operators.datagen.render")
job = importlib.import_module("near_addon.operators.datagen.job")
generate = importlib.import_module("near_addon.operators.generate_data")
bridge = addon.engine.scene_bridge

DIFFUSE_SPHERE = "proc:sphere,roughness=1,metallic=0,specular=0,base_color=0.7/0.3/0.2"


def _cfg(**kw) -> DatagenConfig:
    base = {"engine": "cycles", "resolution": 32, "samples": 8, "denoise": False, "homog_views": 0, "shaded_views": 0,
            "cond_views": 0, "input_views": 0, "relit_views": 0, "relit_lights": 0}  # fmt: skip
    base.update(kw)
    return DatagenConfig(**base)


def test_every_library_shape_is_normalized_into_the_unit_cube():
    for i, shape in enumerate(SHAPES):
        scene = empty_scene()
        spec = procedural_spec(0, 0)
        spec["shape"] = shape
        spec["dims"] = [1.0, 0.5, 0.8]
        spec["rotation_z_deg"] = 30.0 * i
        objs = assets.build_procedural(spec, scene, f"shape-{shape}")
        record, tris = assets.normalize(objs, scene, shape)
        again = assets.evaluated_triangles(scene, objs)  # what Blender renders after normalization
        np.testing.assert_allclose(again, tris, atol=1e-5)
        lo, hi = again.reshape(-1, 3).min(0), again.reshape(-1, 3).max(0)
        assert (hi - lo).max() == pytest.approx(1.0, abs=1e-5), shape
        np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-5)
        assert record["scale"] > 0 and len(tris) >= 12


def _occupied(tris: np.ndarray, res: int = 32) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in voxelize_triangles(tris, res)}


def test_v2_shapes_have_their_holes_thin_parts_and_concavities():
    """Every v2 shape builds, normalizes and leaves no helper objects; the booleans cut what they
    should (voxels of the normalized surface at 32^3, cell (i, j, k) centred at (i + 0.5) / 32 - 0.5)."""
    occ = {}
    for shape in V2_SHAPES:
        scene = empty_scene()
        spec = parse_procedural_spec(f"proc:{shape}")
        spec["sharp_angle_deg"] = 40.0
        objs = assets.build_procedural(spec, scene, f"v2-{shape}")
        assert [o.name for o in scene.objects] == [f"v2-{shape}"], shape  # no boolean helpers left
        _, tris = assets.normalize(objs, scene, shape)
        lo, hi = tris.reshape(-1, 3).min(0), tris.reshape(-1, 3).max(0)
        assert (hi - lo).max() == pytest.approx(1.0, abs=1e-5), shape
        occ[shape] = _occupied(tris)
    centre_column = {(15, 15, k) for k in range(4, 28)} | {(16, 16, k) for k in range(4, 28)}
    assert not occ["tube"] & centre_column  # a through hole along Z
    assert not occ["holed_cube"] & ({(15, 15, k) for k in range(32)} | {(k, 15, 15) for k in range(32)})
    assert (31, 31, 16) not in occ["l_block"] and (0, 0, 16) in occ["l_block"]  # the cut corner
    assert not occ["bowl"] & {(16, 16, k) for k in range(10, 32)}  # open above its bottom
    thin = {s: len({k for _, _, k in occ[s]}) for s in ("plate", "ring")}
    assert thin["plate"] <= 4 and thin["ring"] <= 6, thin  # thin parts: a few voxels high


def test_v2_textures_put_their_two_colours_on_the_surface():
    cfg = _cfg(resolution=48)
    a, b = [0.8, 0.2, 0.1], [0.1, 0.3, 0.9]
    share = {}
    for kind in ("brick", "gradient", "magic", "sticker"):
        scene = empty_scene()
        spec = parse_procedural_spec(f"proc:cube,base_color=0.8/0.2/0.1,color2=0.1/0.3/0.9,texture={kind}")
        if kind == "sticker":  # a disc of radius 0.3 centred on the face the camera sees (-Y)
            spec["material"]["texture"].update(center=[0.0, -0.5, 0.0], radius=0.3)
        objs = assets.build_procedural(spec, scene, kind)
        assets.normalize(objs, scene, kind)
        materials.material_report(objs)  # wires the AOVs, as the job does
        passes = _render_passes(scene, cfg, yaw=-90.0, pitch=0.0)
        full = passes["Combined"][..., 3] > 0.999
        bc = passes["base_color"][..., :3][full]
        t = np.clip(((bc - a) @ np.subtract(b, a)) / np.sum(np.subtract(b, a) ** 2), 0, 1)  # mix factor
        resid = np.abs(bc - (np.array(a) + t[:, None] * np.subtract(b, a))).max()
        assert resid < 1e-3, kind  # every pixel is a mix of the two colours
        share[kind] = (float((t < 0.05).mean()), float((t > 0.95).mean()), t.std())
        assert t.std() > 0.1, (kind, share[kind])  # the texture varies over the surface
        if kind == "sticker":  # a hard disc: only the two colours, b on pi r^2 of the 1x1 face
            assert share[kind][0] + share[kind][1] > 0.93  # the rest: antialiased rim pixels
            assert share[kind][1] == pytest.approx(np.pi * 0.3**2, abs=0.05)


def _render_passes(scene, cfg, yaw=-90.0, pitch=10.0):
    from near_blender.data.sampling import make_camera

    render.configure_scene(scene, cfg)
    cam = render.ensure_camera(scene)
    render.place_camera(make_camera(yaw, pitch, 2.0, 40.0, cfg.resolution), cam, scene)
    light = lighting.Lighting(scene, {})
    light.apply({"type": "uniform", "color": [1, 1, 1], "strength": 1.0})
    return render.render_view(scene, Path(bpy.app.tempdir or "/tmp") / "near-aov-test.exr")


def test_aovs_follow_constants_textures_and_mix_shaders():
    cfg = _cfg(resolution=24)
    # 1. a Mix Shader of two Principled BSDFs with a constant factor folds to constants
    scene = empty_scene()
    objs = assets.build_procedural(parse_procedural_spec("proc:cube"), scene, "mix")
    mat = objs[0].material_slots[0].material
    nt = mat.node_tree
    p1 = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    p1.inputs["Base Color"].default_value = (0.9, 0.1, 0.1, 1)
    p1.inputs["Roughness"].default_value = 0.2
    p1.inputs["Metallic"].default_value = 1.0
    p2 = nt.nodes.new("ShaderNodeBsdfPrincipled")
    p2.inputs["Base Color"].default_value = (0.1, 0.1, 0.9, 1)
    p2.inputs["Roughness"].default_value = 0.6
    p2.inputs["Metallic"].default_value = 0.0
    mix = nt.nodes.new("ShaderNodeMixShader")
    mix.inputs[0].default_value = 0.25
    out = nt.get_output_node("ALL")
    nt.links.new(p1.outputs[0], mix.inputs[1])
    nt.links.new(p2.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    assets.normalize(objs, scene, "mix")
    (summary,) = materials.material_report(objs)
    assert summary["roughness"] == pytest.approx(0.75 * 0.2 + 0.25 * 0.6)
    assert summary["metallic"] == pytest.approx(0.75)
    np.testing.assert_allclose(summary["base_color"], [0.7, 0.1, 0.3], atol=1e-6)
    passes = _render_passes(scene, cfg)
    full = passes["Combined"][..., 3] > 0.999
    assert full.sum() > 50
    np.testing.assert_allclose(passes["roughness"][..., 0][full], 0.3, atol=1e-5)
    np.testing.assert_allclose(passes["metallic"][..., 0][full], 0.75, atol=1e-5)
    np.testing.assert_allclose(passes["base_color"][..., :3][full], np.broadcast_to([0.7, 0.1, 0.3], (full.sum(), 3)),
                               atol=1e-5)  # fmt: skip
    # 2. a textured material: the AOVs take the texture's two colours and roughnesses
    scene = empty_scene()
    spec = parse_procedural_spec("proc:cube,base_color=0.8/0.2/0.1,color2=0.1/0.3/0.9,texture=checker,"
                                 "texture_scale=3,roughness=0.25,roughness2=0.85,metallic=0")  # fmt: skip
    objs = assets.build_procedural(spec, scene, "tex")
    assets.normalize(objs, scene, "tex")
    (summary,) = materials.material_report(objs)
    assert "linked" in summary["base_color"] and "linked" in summary["roughness"] and summary["metallic"] == 0
    passes = _render_passes(scene, cfg)
    full = passes["Combined"][..., 3] > 0.999
    rough = np.round(passes["roughness"][..., 0][full], 3)
    values, counts = np.unique(rough, return_counts=True)
    top = sorted(values[np.argsort(counts)[-2:]])  # pixels straddling a checker edge mix the two
    np.testing.assert_allclose(top, [0.25, 0.85], atol=1e-3)
    assert counts[np.argsort(counts)[-2:]].sum() > 0.6 * full.sum()
    bc = passes["base_color"][..., :3][full]
    assert np.isclose(bc, [0.8, 0.2, 0.1], atol=1e-4).all(axis=1).mean() > 0.25
    assert np.isclose(bc, [0.1, 0.3, 0.9], atol=1e-4).all(axis=1).mean() > 0.25
    # 3. other shaders and objects without material
    scene = empty_scene()
    me = bpy.data.meshes.new("bare")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    bare = bpy.data.objects.new("bare", me)
    scene.collection.objects.link(bare)
    assert materials.ensure_materials([bare]) == 1
    diffuse = bpy.data.materials.new("diffuse")
    dn = diffuse.node_tree.nodes.new("ShaderNodeBsdfDiffuse")
    dn.inputs["Color"].default_value = (0.3, 0.4, 0.5, 1)
    diffuse.node_tree.links.new(dn.outputs[0], diffuse.node_tree.get_output_node("ALL").inputs["Surface"])
    toon = bpy.data.materials.new("toon")
    tn = toon.node_tree.nodes.new("ShaderNodeBsdfToon")
    toon.node_tree.links.new(tn.outputs[0], toon.node_tree.get_output_node("ALL").inputs["Surface"])
    s_bare, s_diffuse, s_toon = (
        materials.wire_aovs(m) for m in (bare.material_slots[0].material, diffuse, toon)
    )
    assert (s_bare["roughness"], s_bare["base_color"]) == (0.5, [0.8, 0.8, 0.8])
    assert (s_diffuse["roughness"], s_diffuse["metallic"]) == (1.0, 0.0)
    np.testing.assert_allclose(s_diffuse["base_color"], [0.3, 0.4, 0.5], atol=1e-6)
    assert "unsupported surface node" in s_toon["notes"][0]
    # re-wiring replaces, never duplicates, the AOV nodes
    n_nodes = len(diffuse.node_tree.nodes)
    materials.wire_aovs(diffuse)
    assert len(diffuse.node_tree.nodes) == n_nodes


def test_environment_worlds_round_trip_through_the_scene_bridge(tmp_path):
    scene = empty_scene()
    envs = lighting.load_envmaps([studio_hdri("city")])
    assert envs[0].ok
    light = lighting.Lighting(scene, {e.name: e for e in envs})
    env = light.apply({"type": "envmap", "envmap": "city", "rotation_z": 1.234, "strength": 1.0})
    back = bridge.environment_from_world(scene.world)
    assert back.rotation_z == pytest.approx(1.234, abs=1e-6)
    np.testing.assert_allclose(back.radiance, envs[0].radiance, rtol=1e-6)
    assert env.rotation_z == pytest.approx(1.234)
    # lights: the rig and the area lights are placed and aimed as specified
    from near_blender.data.sampling import RIG, six_area_lights

    light.apply(RIG)
    assert sorted(o.data.type for o in light.lights) == ["AREA", "AREA", "POINT"]
    six = {"type": "lights", "mode": "six_area", "world_color": [0, 0, 0],
           "lights": six_area_lights(np.random.default_rng(0), 1.0)}  # fmt: skip
    light.apply(six)
    scene.view_layers[0].update()
    assert len(light.lights) == 6
    for obj, spec in zip(light.lights, six["lights"], strict=True):
        axis = -np.array(obj.matrix_world.to_3x3().col[2])  # area lights emit along local -Z
        np.testing.assert_allclose(axis, spec["direction"], atol=1e-5)
        assert obj.data.energy == pytest.approx(spec["power_w"]) and not obj.visible_camera
    light.close()
    assert not [o for o in bpy.data.objects if o.type == "LIGHT"]


def test_bad_inputs_give_clear_errors(tmp_path):
    bad_glb = tmp_path / "broken.glb"
    bad_glb.write_bytes(b"\x00garbage" * 50)
    empty_gltf = tmp_path / "nomesh.gltf"
    empty_gltf.write_text(json.dumps({"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "scene": 0,
                                      "nodes": [{"name": "just-an-empty"}]}))  # fmt: skip
    scene = empty_scene()
    with pytest.raises(NearError, match="cannot import this file"):
        assets.import_file(str(bad_glb), scene)
    scene = empty_scene()
    objs = assets.import_file(str(empty_gltf), scene)
    with pytest.raises(NearError, match=r"no mesh with faces to render \(found: 1 empty\)"):
        assets.normalize(objs, scene, "nomesh.gltf")
    wide = tmp_path / "square.exr"
    write_exr(wide, np.ones((16, 16, 3), np.float32))
    corrupt = tmp_path / "corrupt.exr"
    corrupt.write_bytes(b"v/1\x01" + b"\x07" * 300)
    nan = tmp_path / "nan.exr"
    img = np.ones((8, 16, 3), np.float32)
    img[2, 3] = np.nan
    write_exr(nan, img, half=False)
    envs = lighting.load_envmaps([wide, corrupt, nan, tmp_path / "missing.exr", studio_hdri("forest")])
    errors = {e.name: e.error for e in envs}
    assert "must be twice as wide as tall" in errors["square"]
    assert "cannot be read" in errors["corrupt"]
    assert "3 NaN" in errors["nan"]  # one pixel, three channels
    assert "not found" in errors["missing"]
    assert errors["forest"] is None  # tiny negative values of the bundled map are clamped, not fatal
    assert envs[-1].radiance.min() >= 0
    with pytest.raises(NearError, match="no such map"):
        lighting.env_name_list(envs, ("night",))
    pool, hold = lighting.env_name_list(envs, ("forest",))
    assert pool == [] and hold == ["forest"]


def _run_job(tmp_path, cfg, sources, envs=("studio", "sunset"), **kw):
    spec = job.JobSpec(
        out=tmp_path, config=cfg, sources=sources, envmap_paths=[studio_hdri(n) for n in envs], **kw
    )
    j = job.DatagenJob(spec)
    return j, j.run()


def _src(text: str, name: str) -> AssetSource:
    return AssetSource(name, "procedural", text, spec=parse_procedural_spec(text))


def test_shadow_pass_is_one_on_a_convex_asset_and_drops_in_cavities(tmp_path):
    cfg = _cfg(samples=64, relit_views=2, relit_lights=2)
    sources = [
        _src(DIFFUSE_SPHERE, "sphere"),
        _src("proc:torus,roughness=1,metallic=0,specular=0,base_color=0.5/0.5/0.5", "torus"),
        _src("proc:uv_sphere,roughness=0.3,metallic=1,base_color=0.9/0.8/0.5", "metal"),
    ]
    _, end = _run_job(tmp_path, cfg, sources)
    assert (end["done"], end["failed"]) == (3, 0)
    stats = {}
    for name in ("sphere", "torus", "metal"):
        views = [read_view(p) for p in sorted((tmp_path / "assets" / name / "relit").glob("*.exr"))]
        w = np.concatenate([v["shadow_weight"].ravel() for v in views]) > 0
        s = np.concatenate([v["shadow"].ravel() for v in views])[w]
        full = np.concatenate([v["rgba"][..., 3].ravel() for v in views]) > 0.999
        rough = np.concatenate([v["roughness"].ravel() for v in views])[full]
        metal = np.concatenate([v["metallic"].ravel() for v in views])[full]
        stats[name] = (s, rough, metal, w.sum())
    s, rough, metal, _ = stats["sphere"]
    assert np.median(s) > 0.95 and np.mean(s) > 0.9  # nothing occludes a convex asset
    np.testing.assert_allclose(rough, 1.0, atol=1e-3)
    np.testing.assert_allclose(metal, 0.0, atol=1e-3)
    s, *_ = stats["torus"]
    assert np.percentile(s, 5) < 0.75  # the inside of the ring sees less of the sky
    s, rough, metal, n_weighted = stats["metal"]
    assert n_weighted == 0  # no diffuse component: the ratio is undefined (weight 0)
    np.testing.assert_allclose(rough, 0.3, atol=1e-3)
    np.testing.assert_allclose(metal, 1.0, atol=1e-3)


def test_operator_and_runner_leave_the_scene_untouched_and_resume(tmp_path):
    scene = empty_scene()
    bpy.ops.mesh.primitive_monkey_add(location=(3, 1, 0.5))
    monkey = bpy.context.active_object
    mat = bpy.data.materials.new("artist material")
    monkey.data.materials.append(mat)
    n_nodes = len(mat.node_tree.nodes)
    monkey.select_set(True)
    before = {
        k: sorted(i.name for i in getattr(bpy.data, k)) for k in job.TemporaryScenes.KINDS + ("scenes",)
    }

    cfg = _cfg(resolution=16, samples=2, homog_views=2, input_views=2, relit_views=1, relit_lights=1)
    sources = object_sources([monkey.name], "scene.blend")
    spec = job.JobSpec(out=tmp_path, config=cfg, sources=sources, envmap_paths=[studio_hdri("studio")])
    runner = generate.JobRunner(job.DatagenJob(spec, job.TemporaryScenes()))
    renders = []
    while len(renders) < 3:
        ev = runner.step()
        if ev["event"] == "render":
            renders.append(ev["file"])
    runner.cancel()  # ESC after three renders
    adir = tmp_path / "assets" / sources[0].id
    files = sorted(p.relative_to(adir).as_posix() for p in adir.rglob("*.exr"))
    assert files == sorted(renders) and not (adir / "status.json").exists()
    mtimes = {f: (adir / f).stat().st_mtime_ns for f in files}
    after_cancel = {k: sorted(i.name for i in getattr(bpy.data, k)) for k in before}
    assert after_cancel == before  # temporary scene and its datablocks are gone
    assert len(mat.node_tree.nodes) == n_nodes and bpy.context.scene == scene

    runner = generate.JobRunner(
        job.DatagenJob(job.JobSpec(**{**spec.__dict__, "resume": True}), job.TemporaryScenes())
    )
    while runner.step() is not None:
        pass
    assert runner.job.counts == {"done": 1, "failed": 0, "skipped": 0}
    assert json.loads((adir / "status.json").read_text())["status"] == "done"
    assert all((adir / f).stat().st_mtime_ns == t for f, t in mtimes.items())  # kept, not re-rendered
    assert len(list(adir.rglob("*.exr"))) == 2 + 2 + 1
    asset = json.loads((adir / "asset.json").read_text())
    assert asset["source"]["objects"] == [monkey.name]
    assert {k: sorted(i.name for i in getattr(bpy.data, k)) for k in before} == before
    assert list(monkey.location) == pytest.approx([3, 1, 0.5]) and len(mat.node_tree.nodes) == n_nodes

    # the registered operator on the selection (background: it runs to the end)
    # (registered only for this test, so later tests can register the whole add-on)
    registered = not hasattr(bpy.types, "NEAR_OT_generate_training_data")
    if registered:
        bpy.utils.register_class(generate.NEAR_OT_generate_training_data)
    try:
        op_dir = tmp_path / "operator"
        result = bpy.ops.near.generate_training_data(
            directory=str(op_dir), preset="tiny", engine="cycles", resolution=16
        )
        assert result == {"FINISHED"}
        lines = (op_dir / "manifest.jsonl").read_text().splitlines()
        (entry,) = [json.loads(x) for x in lines if '"asset"' in x]
        from near_blender.data.layout import is_held_out

        h = 2 if is_held_out(entry["id"]) else 0  # the held-out maps' views: held-out assets only
        assert entry["status"] == "done" and entry["renders"] == 12 + 12 + 4 + 4 * (1 + h) + 4 * (4 + h)
        assert {k: sorted(i.name for i in getattr(bpy.data, k)) for k in before} == before
        with pytest.raises(RuntimeError, match="other settings"):  # a folder holds one configuration
            bpy.ops.near.generate_training_data(
                directory=str(op_dir), preset="tiny", engine="cycles", resolution=24
            )
    finally:
        if registered:
            bpy.utils.unregister_class(generate.NEAR_OT_generate_training_data)


def test_eevee_homogenized_diffuse_equals_base_colour(tmp_path):
    """The single EEVEE Next test (shader compilation costs ~1 min on 2 CPU cores)."""
    cfg = DatagenConfig(engine="eevee", resolution=32, samples=4, homog_views=1, shaded_views=0, cond_views=0,
                        input_views=0, relit_views=1, relit_lights=1)  # fmt: skip
    _, end = _run_job(tmp_path, cfg, [_src(DIFFUSE_SPHERE, "sphere")], envs=("studio",))
    assert end["done"] == 1
    adir = tmp_path / "assets" / "sphere"
    homog = read_view(adir / "homog" / "000.exr")
    full = homog["rgba"][..., 3] > 0.999
    assert full.sum() > 100
    rgb = homog["rgba"][..., :3][full]
    np.testing.assert_allclose(rgb, np.broadcast_to([0.7, 0.3, 0.2], rgb.shape), rtol=0.05)
    np.testing.assert_allclose(
        homog["base_color"][full], np.broadcast_to([0.7, 0.3, 0.2], rgb.shape), atol=2e-3
    )
    np.testing.assert_allclose(
        homog["roughness"][full], 1.0, atol=3e-3
    )  # EEVEE stores AOVs at ~2e-3 precision
    relit = read_view(adir / "relit" / "000_000.exr")
    w = relit["shadow_weight"] > 0
    # EEVEE lights diffuse surfaces from a spherical-harmonics fit of the world: ratio ~1, not exact
    assert 0.8 < np.median(relit["shadow"][w]) <= 1.0
    assert math.isfinite(float(relit["rgba"].sum()))
