"""The extension: built and validated with Blender's own tool, installed into a temporary
extensions repository, enabled and disabled repeatedly; the NEAR engine and its passes appear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.bpy_session import REPO, bpy, empty_scene, import_addon

pytestmark = pytest.mark.bpy

sys.path.insert(0, str(REPO / "tools"))
import build_extension  # noqa: E402

EXPECTED_PASSES = {"Combined", "Depth", "Alpha", "Base Color", "Roughness", "Metallic", "Shadow", "Normal"}


def _engine_ids_from_error() -> set[str]:
    """The render engines Blender currently offers (its dynamic enum, read off the error message)."""
    try:
        bpy.context.scene.render.engine = "__none__"
    except TypeError as e:
        return set(str(e).split("not found in")[1].strip(" ()").replace("'", "").split(", "))
    raise AssertionError("setting an unknown engine did not fail")


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    stage = tmp_path_factory.mktemp("stage")
    assert build_extension.main(["--out", str(out), "--stage", str(stage / "x"), "--wheels", "none"]) == 0
    (z,) = out.glob("near_blender-*.zip")
    return z


def test_built_zip_validates_and_holds_the_extension(built_zip):
    script = build_extension.blender_ext_script()
    proc = subprocess.run(
        [sys.executable, str(script), "validate", str(built_zip)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = set(zipfile.ZipFile(built_zip).namelist())
    assert {"blender_manifest.toml", "__init__.py", "engine/engine.py", "engine/scene_bridge.py"} <= names
    assert any(n.startswith("wheels/near_blender-") for n in names)
    assert not any(n.startswith(("tests/", "near_blender/", ".venv/")) for n in names)
    manifest = zipfile.ZipFile(built_zip).read("blender_manifest.toml").decode()
    assert 'id = "near_blender"' in manifest and "./wheels/near_blender-" in manifest


def test_install_enable_disable_in_a_fresh_blender(built_zip, tmp_path):
    """A separate Blender (bpy) process with its own user resources: install from the zip into the
    user repository, then disable/enable twice; report what Blender sees each time."""
    script = textwrap.dedent(
        f"""
        import json, bpy, addon_utils
        def engines():
            try:
                bpy.context.scene.render.engine = "__none__"
            except TypeError as e:
                return str(e).split("not found in")[1]
        out = {{"before": "NEAR" in engines()}}
        bpy.ops.extensions.package_install_files(filepath={str(built_zip)!r}, repo="user_default",
                                                 enable_on_install=True)
        mod = "bl_ext.user_default.near_blender"
        out["installed"] = mod in bpy.context.preferences.addons
        out["cycles"] = []
        for i in range(2):
            has = "NEAR" in engines()
            addon_utils.disable(mod, default_set=True)
            gone = "NEAR" not in engines()
            addon_utils.enable(mod, default_set=True)
            back = "NEAR" in engines()
            out["cycles"].append([has, gone, back])
        bpy.context.scene.render.engine = "NEAR"
        out["engine"] = bpy.context.scene.render.engine
        print("RESULT" + json.dumps(out))
        """
    )
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(line[0][6:])
    assert res == {"before": False, "installed": True, "cycles": [[True, True, True]] * 2, "engine": "NEAR"}
    assert (tmp_path / "user/extensions/user_default/near_blender/engine/engine.py").is_file()


def test_register_unregister_twice_in_process():
    addon = import_addon()
    empty_scene()
    for _ in range(2):
        addon.register()
        assert "NEAR" in _engine_ids_from_error()
        assert "NEAR" in bpy.types.DATA_PT_lens.COMPAT_ENGINES  # standard panels show for NeAR
        addon.unregister()
        assert "NEAR" not in _engine_ids_from_error()
        assert "NEAR" not in bpy.types.DATA_PT_lens.COMPAT_ENGINES


def test_f12_writes_every_pass(tmp_path):
    """F12 with the NEAR engine into a multilayer EXR: every declared pass is there, at the render
    size, and Combined shows the world through the camera (no NeAR assets in this scene)."""
    import numpy as np

    from near_blender.render import exr
    from near_blender.render.camera import Camera, intrinsics_from_fov, look_at

    addon = import_addon()
    scene = empty_scene()
    addon.register()
    try:
        scene.render.engine = "NEAR"
        world = bpy.data.worlds.new("W")
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.25, 0.5, 1.0, 1.0)
        scene.world = world
        cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        scene.collection.objects.link(cam_obj)
        scene.camera = cam_obj
        addon.engine.scene_bridge.apply_camera(
            Camera(look_at((3, 0, 1), (0, 0, 0)), intrinsics_from_fov(50, 24, 16), 24, 16), cam_obj, scene
        )
        scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"  # Blender 5.0
        scene.render.image_settings.color_depth = "32"
        scene.render.filepath = str(tmp_path / "f12.exr")
        bpy.ops.render.render(write_still=True)
        ch = exr.read_exr_channels(tmp_path / "f12.exr")
    finally:
        addon.unregister()
    layers = {name.rsplit(".", 1)[0].split(".", 1)[-1] for name in ch}
    assert EXPECTED_PASSES <= layers, sorted(layers)
    assert all(a.shape == (16, 24) for a in ch.values())
    rgba = exr.read_exr(tmp_path / "f12.exr", "ViewLayer.Combined")
    np.testing.assert_allclose(rgba[..., :3], np.broadcast_to([0.25, 0.5, 1.0], (16, 24, 3)), rtol=1e-6)
    np.testing.assert_allclose(rgba[..., 3], 1.0)


@pytest.mark.parametrize(
    ("platform", "wheel_tag"), [("windows-x64", "win_amd64"), ("macos-arm64", "macosx_11_0_arm64")]
)
def test_other_platforms_get_their_own_validated_zip(tmp_path, platform, wheel_tag):
    """``make extension PLATFORM=...``: one zip per platform, named with it, holding only that
    platform's wheels (two small runtime packages here instead of the whole set, to keep the download
    small), validated by Blender's own tool."""
    out = tmp_path / "dist"
    args = ["--out", str(out), "--stage", str(tmp_path / "stage"), "--platform", platform,
            "--packages", "safetensors,OpenEXR"]  # fmt: skip
    assert build_extension.main(args) == 0
    (z,) = out.glob("near_blender-*.zip")
    assert z.name.endswith(f"-{platform.replace('-', '_')}.zip")
    script = build_extension.blender_ext_script()
    proc = subprocess.run([sys.executable, str(script), "validate", str(z)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = [n for n in zipfile.ZipFile(z).namelist() if n.endswith(".whl")]
    platform_wheels = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert len(platform_wheels) == 2 and all(w.endswith(f"-{wheel_tag}.whl") for w in platform_wheels), wheels
    manifest = zipfile.ZipFile(z).read("blender_manifest.toml").decode()
    assert f'platforms = ["{platform}"]' in manifest
