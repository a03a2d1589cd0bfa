"""File > Export > NeAR Asset as 3D Gaussians (.ply) in real Blender (issue 20): the .ply of the
active asset, re-rendered from the scene camera by our rasterizer, reproduces F12's Combined (film
transparent: the premultiplied light pass) with the object moved, turned and scaled; the object's
transform is in the exported means; no asset / an unwritable path / a cancel write nothing."""

from __future__ import annotations

import math
from pathlib import Path

import mathutils
import numpy as np
import pytest

from near_blender.data.slat_io import save_slat_npz
from near_blender.export.ply import read_splat_ply
from near_blender.export.splats import render_splats
from near_blender.render import exr
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from tests.bpy_session import bpy, empty_scene, hdri_world, import_addon

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

addon = import_addon()
from near_addon.engine import scene_bridge  # noqa: E402
from near_addon.operators.export_ply import NEAR_OT_export_gaussians_ply  # noqa: E402
from near_addon.operators.import_image import create_asset_object  # noqa: E402

W, H = 56, 40


def _scene(tmp_path: Path):
    """A saved .blend: a NeAR asset (its sidecar beside it), the forest HDRI turned 30 degrees, a
    camera, film transparent. Returns (scene, asset object)."""
    scene = empty_scene()
    hdri_world(scene, "forest", 30.0, 1.4)
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    cam = Camera(look_at((2.0, -1.5, 0.9), (0.1, 0.0, 0.0)), intrinsics_from_fov(45, W, H), W, H, 0.1, 100)
    scene_bridge.apply_camera(cam, cam_obj, scene)
    scene.render.film_transparent = True
    scene.render.engine = "NEAR"
    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.color_depth = "32"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    g = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = g[np.linalg.norm((g - 31.5) / (12.0, 8.0, 10.0), axis=1) < 1.0]
    feats = np.random.default_rng(3).normal(size=(len(coords), 16)).astype(np.float32)
    npz = save_slat_npz(tmp_path / "vase.near.npz", coords, feats)
    obj = create_asset_object(bpy.context, "vase", bpy.path.relpath(str(npz)), np.eye(4), "vase.png")
    bpy.context.view_layer.objects.active = obj
    return scene, obj


def _f12_combined(scene, path: Path) -> np.ndarray:
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    ch = exr.read_exr_channels(path)
    return np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGBA"], -1)


def _export(path: Path, **kw) -> set[str]:
    return bpy.ops.near.export_gaussians_ply(filepath=str(path), **kw)


def test_exported_ply_reproduces_f12_with_the_object_transform(tmp_path):
    scene, obj = _scene(tmp_path)
    camera = scene_bridge.scene_camera(scene)
    clouds = []
    for i, (angle, scale, offset) in enumerate([(0.0, 1.0, (0, 0, 0)), (40.0, 0.8, (0.2, -0.1, 0.15))]):
        obj.matrix_world = mathutils.Matrix.LocRotScale(
            mathutils.Vector(offset),
            mathutils.Euler((0.0, 0.0, math.radians(angle))),
            mathutils.Vector([scale] * 3),
        )
        bpy.context.view_layer.update()
        f12 = _f12_combined(scene, tmp_path / f"f12_{i}.exr")
        assert _export(tmp_path / f"vase_{i}.ply") == {"FINISHED"}
        cloud = read_splat_ply(tmp_path / f"vase_{i}.ply")
        again = render_splats(cloud, camera)
        assert 0.02 < f12[..., 3].mean() < 0.8  # the asset is in the frame
        mae = float(np.abs(again["rgb"] - f12[..., :3]).mean())
        assert mae < 1e-3 and mae < 0.01 * f12[..., :3].mean(), mae  # (a random model's image is dark)
        print(f"placement {i}: MAE |.ply re-rendered - F12| = {mae:.2e} (F12 mean {f12[..., :3].mean():.3g})")
        assert float(np.abs(again["alpha"][..., 0] - f12[..., 3]).mean()) < 1e-3
        M = np.array(obj.matrix_world)
        canonical = (cloud.means - M[:3, 3]) @ np.linalg.inv(M[:3, :3]).T  # back in the asset's box
        clouds.append((cloud, canonical))
    (c0, k0), (c1, k1) = clouds
    # the object's transform is applied: mapped back to the asset's box both exports coincide ...
    np.testing.assert_allclose(k1.mean(0), k0.mean(0), atol=0.01)
    np.testing.assert_allclose(
        np.percentile(k1, [2, 98], axis=0), np.percentile(k0, [2, 98], axis=0), atol=0.02
    )
    # ... while in the world they are 0.2 m apart and turned (the ellipsoid's long axis follows X')
    assert np.linalg.norm(c1.means.mean(0) - c0.means.mean(0)) > 0.15
    ext0, ext1 = np.ptp(c0.means, axis=0), np.ptp(c1.means, axis=0)
    assert ext0[0] > 1.3 * ext0[1] and ext1[0] / ext1[1] < ext0[0] / ext0[1] - 0.2


def test_export_errors_write_nothing(tmp_path):
    scene, obj = _scene(tmp_path)
    out = tmp_path / "out.ply"
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(RuntimeError, match="blocker: it is a file"):  # an unwritable path
        _export(blocker / "x.ply")
    mesh = bpy.data.objects.new("plain", bpy.data.meshes.new("plain"))
    scene.collection.objects.link(mesh)
    bpy.context.view_layer.objects.active = mesh
    with pytest.raises(RuntimeError, match="'plain' is not a NeAR asset"):  # no LH-SLAT
        _export(out)
    bpy.context.view_layer.objects.active = obj
    Path(bpy.path.abspath(obj.near_asset.sidecar)).rename(tmp_path / "moved.npz")
    with pytest.raises(RuntimeError, match="LH-SLAT file of NeAR asset 'vase' is missing"):
        _export(out)
    (tmp_path / "moved.npz").rename(bpy.path.abspath(obj.near_asset.sidecar))
    NEAR_OT_export_gaussians_ply._blocking_cancel = lambda: True  # Esc at the first step
    try:
        assert _export(out) == {"CANCELLED"}
    finally:
        NEAR_OT_export_gaussians_ply._blocking_cancel = None
    assert not out.exists() and blocker.read_text() == "a file"
    assert not list(tmp_path.rglob("*.ply")) and not list(tmp_path.rglob(".tmp-*"))
    assert _export(out) == {"FINISHED"} and out.is_file()  # and the same export works
