"""Import image as NeAR asset + F12 with the NeAR engine, in real Blender, with a tiny random model.

(The silhouette-IoU check against the mesh needs a trained model and lives in
tests/test_default_model.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from near_blender import NearError
from near_blender.render import exr
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from tests.bpy_session import bpy, empty_scene, import_addon, studio_hdri

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

addon = import_addon()
from near_addon.engine import model_manager  # noqa: E402
from near_addon.engine.session import RenderSession  # noqa: E402
from near_addon.operators import import_image  # noqa: E402

W, H = 64, 48


def _png_with_alpha(path: Path, alpha: bool = True) -> Path:
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((xx - 32) ** 2 + (yy - 32) ** 2) < 24**2
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[disc] = (200, 120, 60)
    if alpha:
        Image.fromarray(np.dstack([rgb, disc.astype(np.uint8) * 255]), "RGBA").save(path)
    else:
        Image.fromarray(rgb, "RGB").save(path)
    return path


def _scene(tmp_path: Path, rotation_deg: float = 0.0):
    scene = empty_scene()
    world = bpy.data.worlds.new("W")
    scene.world = world
    nt = world.node_tree
    tex = nt.nodes.new("ShaderNodeTexEnvironment")
    tex.image = bpy.data.images.load(str(studio_hdri("forest")))
    coord, mapping = nt.nodes.new("ShaderNodeTexCoord"), nt.nodes.new("ShaderNodeMapping")
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(rotation_deg))
    nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    nt.links.new(tex.outputs["Color"], nt.nodes["Background"].inputs["Color"])
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    cam = Camera(look_at((2.2, -1.2, 0.9), (0.3, 0.0, 0.0)), intrinsics_from_fov(45, W, H), W, H, 0.1, 100)
    addon.engine.scene_bridge.apply_camera(cam, cam_obj, scene)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(0.3, 0.0, 0.0), segments=24, ring_count=12)
    sphere = bpy.context.active_object
    scene.render.engine = "NEAR"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    return scene, sphere, cam


def _f12(scene, path: Path) -> dict[str, np.ndarray]:
    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return exr.read_exr_channels(path)


def _import(tmp_path: Path, sphere) -> object:
    bpy.ops.object.select_all(action="DESELECT")
    sphere.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    res = bpy.ops.near.import_image(filepath=str(_png_with_alpha(tmp_path / "photo.png")))
    assert res == {"FINISHED"}
    return bpy.context.active_object


def test_import_then_f12_passes_and_placement(tmp_path):
    scene, sphere, cam = _scene(tmp_path)
    asset = _import(tmp_path, sphere)
    assert asset.near_asset.is_asset and asset.near_asset.sidecar.startswith("//")
    sidecar = Path(bpy.path.abspath(asset.near_asset.sidecar))
    assert sidecar == tmp_path / "photo.near.npz" and sidecar.is_file()
    assert sphere.hide_render  # the prior mesh is not rendered by NeAR's scene
    # the canonical box is mapped onto the sphere's bounding box
    np.testing.assert_allclose(np.array(asset.matrix_world.translation), (0.3, 0.0, 0.0), atol=1e-5)
    np.testing.assert_allclose(np.array(asset.matrix_world.to_scale()), [0.8] * 3, rtol=1e-3)

    ch = _f12(scene, tmp_path / "a.exr")
    layers = {n.rsplit(".", 1)[0].split(".", 1)[-1] for n in ch}
    assert {"Combined", "Depth", "Alpha", "Base Color", "Roughness", "Metallic", "Shadow", "Normal"} <= layers
    assert all(a.shape == (H, W) for a in ch.values())
    alpha = ch["ViewLayer.Alpha.A"]
    assert 0.02 < alpha.mean() < 0.6  # the asset is there, and not everywhere

    # Moving the object moves the rendered silhouette by the projected amount.
    def centroid(a: np.ndarray) -> np.ndarray:
        ys, xs = np.mgrid[0:H, 0:W]
        return np.array([(a * (xs + 0.5)).sum(), (a * (ys + 0.5)).sum()]) / a.sum()

    shift = np.array([0.0, 0.25, 0.1])
    asset.location = tuple(np.array(asset.location) + shift)
    bpy.context.view_layer.update()
    moved = _f12(scene, tmp_path / "b.exr")["ViewLayer.Alpha.A"]
    uv0 = cam.project(np.array([[0.3, 0.0, 0.0]]))[0][0]
    uv1 = cam.project(np.array([[0.3, 0.0, 0.0]]) + shift)[0][0]
    np.testing.assert_allclose(centroid(moved) - centroid(alpha), uv1 - uv0, atol=1.0)


def test_world_mapping_rotation_equals_rotating_the_stack_environment(tmp_path):
    from near_addon.engine import session as S

    from near_blender.scene import PlacedAsset

    scene, sphere, _ = _scene(tmp_path, rotation_deg=70.0)
    asset = _import(tmp_path, sphere)
    scene.render.film_transparent = True
    ch = _f12(scene, tmp_path / "rot.exr")
    rgb = np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGB"], -1)
    # The same asset rendered by the stack directly, the unrotated map rotated in the Environment.
    env = exr.read_envmap(studio_hdri("forest")).with_rotation(math.radians(70.0))
    pipe = model_manager.get_pipeline()
    (placed,) = S.collect_assets(bpy.context.evaluated_depsgraph_get())  # the one asset
    key, coords, feats = S.render_caches().sidecar(placed)
    M = np.array(asset.matrix_world)
    cam = addon.engine.scene_bridge.scene_camera(scene)
    direct = S.render_caches().scene_renderer(pipe).render([PlacedAsset(key, coords, feats, M)], cam, env)
    np.testing.assert_allclose(rgb, direct["hdr"], atol=2e-4)
    unrotated = (
        S.render_caches()
        .scene_renderer(pipe)
        .render([PlacedAsset(key, coords, feats, M)], cam, env.with_rotation(0.0))
    )
    assert np.abs(unrotated["hdr"] - direct["hdr"]).max() > 1e-3  # the rotation does change the image


class FakeEngine:
    """Records what the session asks of a RenderEngine; test_break turns True after ``n`` calls."""

    def __init__(self, breaks_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.errors: list[str] = []
        self.n, self.breaks_after = 0, breaks_after
        self.camera_override = None

    def test_break(self) -> bool:
        self.n += 1
        return self.breaks_after is not None and self.n > self.breaks_after

    def camera_model_matrix(self, cam):
        return cam.matrix_world

    def update_progress(self, f):
        self.calls.append("progress")

    def update_stats(self, a, b):
        pass

    def error_set(self, msg):
        self.errors.append(msg)

    def report(self, kind, msg):
        if "ERROR" in kind:  # how errors reach the caller in background mode
            self.errors.append(msg)

    def add_pass(self, *a, **k):
        self.calls.append("add_pass")

    def begin_result(self, *a, **k):
        self.calls.append("begin_result")
        raise AssertionError("a cancelled or failed render must not write a result")


def _depsgraph(scene):
    return bpy.context.evaluated_depsgraph_get()


class CountingEngine(FakeEngine):
    """A FakeEngine that lets the result be written (into a throw-away object)."""

    def begin_result(self, x, y, w, h, layer=""):
        import types

        self.calls.append("begin_result")
        rp = types.SimpleNamespace(name="", rect=types.SimpleNamespace(foreach_set=lambda a: None))
        return types.SimpleNamespace(layers=[types.SimpleNamespace(passes=[rp])])

    def end_result(self, result):
        self.calls.append("end_result")


def test_cancel_during_f12_writes_nothing(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    _import(tmp_path, sphere)
    full = CountingEngine()
    RenderSession().render(full, _depsgraph(scene))
    assert full.calls.count("begin_result") == 1 and full.errors == []
    checks = full.n  # how many times an uncancelled F12 asks test_break
    assert checks >= 3
    # Cancel after each check in turn (before decoding, mid-render, after rasterizing): the render
    # stops at the very next check, writes no result and reports no error.
    for k in range(checks):
        eng = FakeEngine(breaks_after=k)
        RenderSession().render(eng, _depsgraph(scene))
        assert eng.n == k + 1, (k, eng.n)
        assert "begin_result" not in eng.calls and eng.errors == []


def test_cancel_during_import_leaves_no_sidecar(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    calls = {"n": 0}

    def cancel_after_first_step() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    import_image.NEAR_OT_import_image._blocking_cancel = cancel_after_first_step  # WorkerModal's Esc
    try:
        bpy.ops.object.select_all(action="DESELECT")
        sphere.select_set(True)
        bpy.context.view_layer.objects.active = sphere
        res = bpy.ops.near.import_image(filepath=str(_png_with_alpha(tmp_path / "photo.png")))
    finally:
        import_image.NEAR_OT_import_image._blocking_cancel = None
    assert res == {"CANCELLED"}
    assert not list(tmp_path.glob("*.npz")) and not list(tmp_path.glob(".tmp-*"))
    assert not [o for o in bpy.data.objects if o.near_asset.is_asset]
    assert calls["n"] > 2  # it did start sampling, and stopped at the next check


def test_bad_inputs_are_clear_errors(tmp_path, monkeypatch):
    scene, sphere, _ = _scene(tmp_path)
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(NearError, match="Cannot read the image"):
        import_image.read_image_rgba(bad)
    with pytest.raises(NearError, match="no transparent background"):
        import_image.read_image_rgba(_png_with_alpha(tmp_path / "opaque.png", alpha=False))

    # the operator reads the image before any heavy work (voxelizing, the model): a bad file fails at once
    def must_not_run(*a, **k):
        raise AssertionError("the prior was voxelized before the image was checked")

    monkeypatch.setattr(import_image, "voxelize_prior", must_not_run)
    monkeypatch.setattr(model_manager, "get_pipeline", must_not_run)
    bpy.ops.object.select_all(action="DESELECT")
    sphere.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    with pytest.raises(RuntimeError, match="Cannot read the image"):
        bpy.ops.near.import_image(filepath=str(bad))
    monkeypatch.undo()
    empty = bpy.data.objects.new("empty", None)
    scene.collection.objects.link(empty)
    with pytest.raises(NearError, match=r"The selection \('empty' \(empty\)\) has no mesh\. Select the mesh"):
        import_image.prior_triangles([empty], _depsgraph(scene))
    # missing sidecar at render time
    asset = _import(tmp_path, sphere)
    Path(bpy.path.abspath(asset.near_asset.sidecar)).unlink()
    eng = FakeEngine()
    RenderSession().render(eng, _depsgraph(scene))
    assert eng.errors and "missing" in eng.errors[0] and "begin_result" not in eng.calls
    # no camera / no world
    scene.camera = None
    eng = FakeEngine()
    RenderSession().render(eng, _depsgraph(scene))
    assert "no active camera" in eng.errors[0]
    scene.world = None
    eng = FakeEngine()
    RenderSession().render(eng, _depsgraph(scene))
    assert eng.errors


def _camera_region(scene, width: int, height: int):
    """A 3D viewport region looking through the scene camera (what Rendered shading in camera
    view gives the engine): its size and view / window matrices."""
    import types

    cam_obj = scene.camera
    region = types.SimpleNamespace(width=width, height=height)
    rv3d = types.SimpleNamespace(
        view_matrix=cam_obj.matrix_world.normalized().inverted(),
        window_matrix=cam_obj.calc_matrix_camera(_depsgraph(scene), x=width, y=height, scale_x=1, scale_y=1),
    )
    return region, rv3d


def _rgba(ch: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGBA"], -1)


def test_viewport_renders_the_assets_as_f12(tmp_path):
    from near_addon.engine.viewport import render_view_now

    scene, sphere, _ = _scene(tmp_path)
    asset = _import(tmp_path, sphere)
    f12 = _rgba(_f12(scene, tmp_path / "f12.exr"))
    region, rv3d = _camera_region(scene, W, H)
    px, err = render_view_now(_depsgraph(scene), region, rv3d, scale=1)
    assert err is None and px.shape == (H, W, 4)
    assert np.abs(px - f12).mean() < 2e-3 and np.abs(px[..., 3] - f12[..., 3]).max() < 0.05
    # Viewport Resolution 1/2: the same view at half the pixels (film transparent: alpha = coverage)
    scene.render.film_transparent = True
    half, err = render_view_now(_depsgraph(scene), region, rv3d, scale=2)
    assert err is None and half.shape == (H // 2, W // 2, 4)
    scene.render.resolution_percentage = 50  # F12 of the same view at half the pixels
    coverage = _f12(scene, tmp_path / "half.exr")["ViewLayer.Alpha.A"]
    scene.render.resolution_percentage, scene.render.film_transparent = 100, False
    assert coverage.shape == (H // 2, W // 2) and coverage.mean() > 0.02
    assert np.abs(half[..., 3] - coverage).max() < 0.05
    # A scene that cannot render shows the world alone and says why.
    Path(bpy.path.abspath(asset.near_asset.sidecar)).unlink()
    px, err = render_view_now(_depsgraph(scene), region, rv3d, scale=2)
    assert err is not None and "missing" in err
    assert np.allclose(px[..., 3], 1.0) and px[..., :3].mean() > 0.01


def test_render_settings_and_precision_reach_the_image(tmp_path, monkeypatch):
    scene, sphere, _ = _scene(tmp_path)
    _import(tmp_path, sphere)
    opaque = _rgba(_f12(scene, tmp_path / "opaque.exr"))
    scene.render.film_transparent = True
    clear = _rgba(_f12(scene, tmp_path / "clear.exr"))
    scene.render.film_transparent = False
    scene.near.background_strength = 0.25  # only the world seen directly is scaled
    dim = _rgba(_f12(scene, tmp_path / "dim.exr"))
    np.testing.assert_allclose(dim[..., :3], clear[..., :3] + 0.25 * (opaque - clear)[..., :3], atol=1e-5)
    scene.near.background_strength = 1.0

    scene.near.antialiased = True
    aa = _rgba(_f12(scene, tmp_path / "aa.exr"))
    scene.near.antialiased = False
    assert np.abs(aa - opaque).max() > 1e-3  # a different rasterization mode...
    assert np.abs(aa - opaque).mean() < 0.02  # ...of the same picture

    monkeypatch.setenv("NEAR_PRECISION", "BF16")  # what the Precision preference sets
    bf16 = _rgba(_f12(scene, tmp_path / "bf16.exr"))
    err = bf16[..., :3] - opaque[..., :3]
    assert np.abs(err).max() > 1e-4  # the networks did run in bfloat16
    assert 10 * np.log10(opaque[..., :3].max() ** 2 / (err**2).mean()) > 30  # and agree with fp32
    monkeypatch.setenv("NEAR_PRECISION", "FP8")
    eng = FakeEngine()
    RenderSession().render(eng, _depsgraph(scene))
    assert eng.errors and "Unknown precision" in eng.errors[0]


def test_pack_and_unpack_the_lhslat(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    asset = _import(tmp_path, sphere)
    name = asset.name
    sidecar = Path(bpy.path.abspath(asset.near_asset.sidecar))
    original = sidecar.read_bytes()
    ref = _rgba(_f12(scene, tmp_path / "ref.exr"))

    sidecar.write_bytes(b"not an npz")  # a damaged file is never packed
    with pytest.raises(RuntimeError, match="damaged"):
        bpy.ops.near.pack_lhslat()
    assert asset.near_asset.packed is None
    sidecar.write_bytes(original)
    assert bpy.ops.near.pack_lhslat() == {"FINISHED"}
    assert asset.near_asset.packed is not None
    sidecar.unlink()  # the .blend alone now renders the asset...
    np.testing.assert_allclose(_rgba(_f12(scene, tmp_path / "packed.exr")), ref, atol=1e-6)
    bpy.ops.wm.save_mainfile()  # ...also after saving and reopening it
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "scene.blend"))
    scene, asset = bpy.context.scene, bpy.data.objects[name]
    np.testing.assert_allclose(_rgba(_f12(scene, tmp_path / "reopened.exr")), ref, atol=1e-6)

    sidecar.write_bytes(b"someone else's file")  # unpacking never overwrites a different file
    with pytest.raises(RuntimeError, match="differs from the packed"):
        bpy.ops.near.unpack_lhslat(all_assets=True)
    assert sidecar.read_bytes() == b"someone else's file" and asset.near_asset.packed is not None
    sidecar.unlink()
    assert bpy.ops.near.unpack_lhslat(all_assets=True) == {"FINISHED"}
    assert sidecar.read_bytes() == original and asset.near_asset.packed is None
    assert not [t for t in bpy.data.texts if t.name.startswith(".near-lhslat-")]
    np.testing.assert_allclose(_rgba(_f12(scene, tmp_path / "unpacked.exr")), ref, atol=1e-6)


class RecordingLayout:
    """A UILayout stand-in: checks that every property and operator a panel draws exists."""

    def __init__(self) -> None:
        self.props: list[str] = []
        self.ops: list[str] = []
        self.labels: list[str] = []
        self.use_property_split, self.enabled, self.alert = False, True, False

    def column(self, **_: object) -> RecordingLayout:
        return self

    row = box = column

    def prop(self, data, name: str, **_: object) -> None:
        assert name in data.bl_rna.properties, name
        self.props.append(name)

    def operator(self, idname: str, **_: object):
        import types

        mod, _, fn = idname.partition(".")
        getattr(getattr(bpy.ops, mod), fn).get_rna_type()  # KeyError when there is no such operator
        self.ops.append(idname)
        return types.SimpleNamespace()

    def label(self, text: str = "", **_: object) -> None:
        self.labels.append(text)


def test_panels_draw_the_settings_and_the_asset_state(tmp_path):
    import types

    from near_addon.ui.panels import OBJECT_PT_near_asset, RENDER_PT_near

    scene, sphere, _ = _scene(tmp_path)
    asset = _import(tmp_path, sphere)

    def draw(panel, engine: str = "NEAR") -> RecordingLayout:
        layout = RecordingLayout()
        ctx = types.SimpleNamespace(
            scene=scene, object=asset, engine=engine, preferences=bpy.context.preferences
        )
        assert panel.poll(ctx)
        panel.draw(types.SimpleNamespace(layout=layout), ctx)
        return layout

    assert not RENDER_PT_near.poll(types.SimpleNamespace(engine="CYCLES"))
    render = draw(RENDER_PT_near)
    assert render.props == ["antialiased", "background_strength", "preview_scale"]
    assert "preferences.addon_show" in render.ops and any("model" in t.lower() for t in render.labels)
    on_file = draw(OBJECT_PT_near_asset, engine="CYCLES")  # an asset shows its panel under any engine
    assert "sidecar" in on_file.props and on_file.ops == ["near.pack_lhslat"]
    assert bpy.ops.near.pack_lhslat() == {"FINISHED"}
    assert draw(OBJECT_PT_near_asset).ops == ["near.unpack_lhslat"]
    assert bpy.ops.near.unpack_lhslat() == {"FINISHED"}
    Path(bpy.path.abspath(asset.near_asset.sidecar)).unlink()
    missing = draw(OBJECT_PT_near_asset)
    assert missing.ops == [] and any("missing" in t for t in missing.labels)
