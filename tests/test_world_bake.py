"""Any world Cycles renders lights NeAR: worlds NeAR cannot read exactly are baked with Cycles, and
HDRIs with NaN / negative pixels are repaired with a warning (issue 23)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender.render import exr
from near_blender.render.envmap import equirect_directions, sanitize_radiance
from tests.bpy_session import bpy
from tests.test_engine_assets import FakeEngine, _depsgraph, _f12, _rgba, _scene
from tests.test_viewport import _asset

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

from near_addon.engine import scene_bridge  # noqa: E402
from near_addon.engine import world_bake as WB  # noqa: E402
from near_addon.engine.session import RenderSession  # noqa: E402

H, W = 32, 64  # bake size = test map size: one texel per pixel


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(float(b.max()) ** 2 / np.mean((a - b) ** 2)))


def _smooth_map(seed: int) -> np.ndarray:
    d = equirect_directions(H, W)
    w = np.random.default_rng(seed).normal(size=(3, 3))
    return (0.2 + np.exp(d @ w)).astype(np.float32)  # positive, smooth, different per channel


def _env_texture(nt, path):
    tex = nt.nodes.new("ShaderNodeTexEnvironment")
    tex.image = bpy.data.images.load(str(path))
    return tex


def _world(name: str):
    world = bpy.data.worlds.new(name)
    return world, world.node_tree, world.node_tree.nodes["Background"]


def test_baked_maps_equal_references_computed_from_the_node_graph(tmp_path):
    a, b = _smooth_map(1), _smooth_map(2)
    exr.write_exr(tmp_path / "a.exr", a)
    exr.write_exr(tmp_path / "b.exr", b)
    baker = WB.WorldBaker(size=(W, H))
    # one Environment Texture: read exactly; its bake equals the exact read (orientation, layout)
    world, nt, bg = _world("plain")
    nt.links.new(_env_texture(nt, tmp_path / "a.exr").outputs["Color"], bg.inputs["Color"])
    exact = scene_bridge.environment_from_world(world).radiance
    assert _psnr(WB.bake_world(world, (W, H)), exact) > 40
    # a Mix of two HDRIs (30 % of b): baked, equal to the mix of the two maps
    world, nt, bg = _world("mix")
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.inputs["Factor"].default_value = 0.3
    nt.links.new(_env_texture(nt, tmp_path / "a.exr").outputs["Color"], mix.inputs["A"])
    nt.links.new(_env_texture(nt, tmp_path / "b.exr").outputs["Color"], mix.inputs["B"])
    nt.links.new(mix.outputs["Result"], bg.inputs["Color"])
    with pytest.raises(scene_bridge.UnsupportedWorldGraph):
        scene_bridge.environment_from_world(world)
    env = baker.environment(world)
    assert env.meta["source"] == "baked" and _psnr(env.radiance, 0.7 * a + 0.3 * b) > 40
    # a Gradient texture of the view direction: linear in x, clamped to [0, 1]
    world, nt, bg = _world("gradient")
    grad, coord = nt.nodes.new("ShaderNodeTexGradient"), nt.nodes.new("ShaderNodeTexCoord")
    nt.links.new(coord.outputs["Generated"], grad.inputs["Vector"])
    nt.links.new(grad.outputs["Color"], bg.inputs["Color"])
    bg.inputs["Strength"].default_value = 2.0
    expected = 2.0 * np.clip(equirect_directions(H, W)[..., :1], 0, 1).repeat(3, -1)
    assert _psnr(baker.environment(world).radiance, expected.astype(np.float32)) > 40
    assert baker.bakes == 2


def test_sky_and_other_worlds_render_with_near_and_bake_once(tmp_path):
    scene, _, _ = _scene(tmp_path)
    _asset(tmp_path)
    world, nt, bg = _world("sky")
    sky = nt.nodes.new("ShaderNodeTexSky")
    nt.links.new(sky.outputs["Color"], bg.inputs["Color"])
    scene.world = world
    baker = WB.world_baker()
    before = baker.bakes
    img = _rgba(_f12(scene, tmp_path / "sky1.exr"))
    assert np.isfinite(img).all() and img[..., :3].max() > 0.05
    assert baker.bakes == before + 1
    sky_map = baker.environment(world).radiance  # cached: no bake
    n = len(sky_map) // 2
    assert sky_map[:n].mean() > 5 * sky_map[n:].mean() > 0  # bright sky above a dark ground
    again = _rgba(_f12(scene, tmp_path / "sky2.exr"))
    assert baker.bakes == before + 1  # unchanged world: no second bake
    np.testing.assert_allclose(again, img, atol=1e-6)
    bg.inputs["Strength"].default_value = 0.5  # one node value changed: bake again
    dimmer = _rgba(_f12(scene, tmp_path / "sky3.exr"))
    assert baker.bakes == before + 2
    half = baker.environment(world).radiance
    assert abs(float(half.mean() / sky_map.mean()) - 0.5) < 0.01
    assert np.abs(dimmer - img).max() > 1e-3  # and F12 used the new map
    # a Mix of two HDRIs and a Gradient render with NEAR too (their maps are checked above)
    for name, kind in (("mix2", "mix"), ("grad2", "gradient")):
        world, nt, bg = _world(name)
        if kind == "mix":
            for i, seed in enumerate((5, 6)):
                exr.write_exr(tmp_path / f"m{i}.exr", _smooth_map(seed))
            mix = nt.nodes.new("ShaderNodeMix")
            mix.data_type = "RGBA"
            nt.links.new(_env_texture(nt, tmp_path / "m0.exr").outputs["Color"], mix.inputs["A"])
            nt.links.new(_env_texture(nt, tmp_path / "m1.exr").outputs["Color"], mix.inputs["B"])
            nt.links.new(mix.outputs["Result"], bg.inputs["Color"])
        else:
            grad = nt.nodes.new("ShaderNodeTexGradient")
            nt.links.new(nt.nodes.new("ShaderNodeTexCoord").outputs["Generated"], grad.inputs["Vector"])
            nt.links.new(grad.outputs["Color"], bg.inputs["Color"])
        scene.world = world
        n = baker.bakes
        out = _rgba(_f12(scene, tmp_path / f"{name}.exr"))
        assert baker.bakes == n + 1 and np.isfinite(out).all() and out[..., :3].max() > 0.01


def test_an_hdri_with_nan_and_negative_pixels_renders_with_a_warning(tmp_path):
    scene, _, _ = _scene(tmp_path)
    _asset(tmp_path)
    clean = _smooth_map(3)
    broken = clean.copy()
    broken[3, 5] = np.nan
    broken[7, 9, 1] = -0.5
    broken[10, 20, 2] = np.inf
    repaired, counts = sanitize_radiance(broken)
    assert counts == {"nan": 3, "posinf": 1, "neginf": 0, "negative": 1}
    exr.write_exr(tmp_path / "broken.exr", broken)
    exr.write_exr(tmp_path / "repaired.exr", repaired)
    images = []
    for name in ("broken", "repaired"):
        world, nt, bg = _world(name)
        nt.links.new(_env_texture(nt, tmp_path / f"{name}.exr").outputs["Color"], bg.inputs["Color"])
        scene.world = world
        images.append(_rgba(_f12(scene, tmp_path / f"f12_{name}.exr")))
    assert np.isfinite(images[0]).all()
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)  # the render of the repaired map

    class Reports(FakeEngine):
        def report(self, kind, msg):
            self.calls.append((tuple(kind), msg))

        def begin_result(self, *a, **k):  # let it write into nothing
            import types

            rp = types.SimpleNamespace(name="", rect=types.SimpleNamespace(foreach_set=lambda a: None))
            return types.SimpleNamespace(layers=[types.SimpleNamespace(passes=[rp])])

        def end_result(self, result):
            pass

    scene.world = bpy.data.worlds["broken"]
    eng = Reports()
    RenderSession().render(eng, _depsgraph(scene))
    warnings = [m for c in eng.calls if isinstance(c, tuple) for k, m in [c] if "WARNING" in k]
    assert eng.errors == [] and len(warnings) == 1
    assert "'broken.exr'" in warnings[0] and "3 nan" in warnings[0] and "1 negative" in warnings[0]
    assert math.isfinite(float(repaired.max()))


def test_the_viewport_bakes_on_its_worker_not_in_the_draw_callback(tmp_path):
    import types

    from near_addon.engine import viewport as V

    from tests.test_engine_assets import _camera_region
    from tests.test_viewport import Recorder

    scene, _, _ = _scene(tmp_path)
    _asset(tmp_path)
    world, nt, bg = _world("viewport sky")
    nt.links.new(nt.nodes.new("ShaderNodeTexSky").outputs["Color"], bg.inputs["Color"])
    bg.inputs["Strength"].default_value = 0.7  # a map of its own (not cached by another test)
    scene.world = world
    scene.near.preview_scale = "1"
    region, rv3d = _camera_region(scene, 80, 48)
    context = types.SimpleNamespace(region=region, region_data=rv3d)
    rec, baker = Recorder(), WB.world_baker()
    before = baker.bakes
    session = V.ViewportSession(present=rec)
    try:
        session.draw(rec, context, _depsgraph(scene))
        pending = session.snapshots._bake
        assert pending is not None and baker.bakes == before  # handed to the worker, not baked here
        assert session.worker.wait_idle(timeout=120)
        session.draw(rec, context, _depsgraph(scene))
    finally:
        session.close()
    assert baker.bakes == before + 1
    last = rec.drawn[-1]
    assert last.final and last.error is None
    expected, err = V.render_view_now(_depsgraph(scene), region, rv3d, 1)  # the cached map, same view
    assert err is None
    np.testing.assert_allclose(last.pixels, expected, atol=1e-5)
