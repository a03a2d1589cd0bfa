"""Import an image as a NeAR asset with the shipped default model and F12 it: the rendered alpha
covers the geometry prior's silhouette through the camera (see the IoU figure below)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from near_blender.render import exr
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from tests.bpy_session import addon_with_model, bpy, empty_scene, import_addon, studio_hdri

pytestmark = pytest.mark.bpy

addon = import_addon()

W = H = 64
CENTRE, RADIUS = np.array([0.2, -0.1, 0.3]), 0.5


@pytest.fixture(scope="module", autouse=True)
def bundled_model():
    with addon_with_model(None):  # the add-on's default: the bundled model
        yield


def sphere_coverage(cam: Camera, ss: int = 4) -> np.ndarray:
    """Fraction of each pixel ``[H, W]`` whose rays (ss x ss per pixel) hit the true sphere."""
    o = (np.arange(ss) + 0.5) / ss
    ys, xs = np.mgrid[0:H, 0:W]
    px = (xs[..., None, None] + o[None, None, None, :]).reshape(H, W, -1)
    py = (ys[..., None, None] + o[None, None, :, None]).reshape(H, W, -1)
    K, R, t = cam.K, cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    d = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones_like(px)], -1) @ R
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    c = -R.T @ t - CENTRE
    b = d @ c
    return ((b**2 - (c @ c - RADIUS**2)) > 0).mean(-1)


def test_default_model_asset_covers_the_mesh_silhouette(tmp_path):
    from PIL import Image

    scene = empty_scene()
    world = bpy.data.worlds.new("W")
    scene.world = world
    tex = world.node_tree.nodes.new("ShaderNodeTexEnvironment")
    tex.image = bpy.data.images.load(str(studio_hdri("city")))
    world.node_tree.links.new(tex.outputs["Color"], world.node_tree.nodes["Background"].inputs["Color"])
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    cam = Camera(look_at((2.0, -1.6, 1.1), tuple(CENTRE)), intrinsics_from_fov(40, W, H), W, H, 0.1, 100)
    addon.engine.scene_bridge.apply_camera(cam, cam_obj, scene)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=RADIUS, location=tuple(CENTRE), segments=48, ring_count=24)
    sphere = bpy.context.active_object
    scene.render.engine = "NEAR"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))

    yy, xx = np.mgrid[0:64, 0:64]
    disc = sphere_coverage(cam) > 0.5  # the photo shows the sphere where the camera sees it
    cy, cx = yy[disc].mean(), xx[disc].mean()
    shade = np.clip(1.1 - np.hypot(xx - cx + 8, yy - cy + 8) / 40, 0.2, 1)[..., None] * [220, 150, 90]
    rgba = np.dstack([np.where(disc[..., None], shade, 0), disc * 255]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photo.png")
    bpy.ops.object.select_all(action="DESELECT")
    sphere.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    assert bpy.ops.near.import_image(filepath=str(tmp_path / "photo.png")) == {"FINISHED"}
    asset = bpy.context.active_object
    assert Path(bpy.path.abspath(asset.near_asset.sidecar)).is_file()

    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(tmp_path / "f12.exr")
    bpy.ops.render.render(write_still=True)
    ch = exr.read_exr_channels(tmp_path / "f12.exr")
    alpha = ch["ViewLayer.Alpha.A"]
    assert alpha.shape == (H, W)
    truth = sphere_coverage(cam) > 0.5
    pred = alpha > 0.5
    iou = (truth & pred).sum() / (truth | pred).sum()
    print(f"silhouette IoU with the bundled model: {iou:.3f}")
    # Measured with the shipped model: IoU 0.920 (the model before this one: 0.895; random
    # stage-2 weights give 0.47-0.77). Issue 8 asks for > 0.9.
    assert truth.sum() > 300 and iou > 0.9, iou
    rgb = np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGB"], -1)
    assert np.isfinite(rgb).all() and rgb[pred].mean() > 0.01  # lit, not black


def test_default_model_import_needs_a_camera_that_frames_the_photo(tmp_path):
    """The bundled model projects the photo onto the prior through the scene camera: without one, or
    with a render aspect ratio that differs from the photo's, the import stops with a clear error."""
    from PIL import Image

    from near_blender import NearError

    imp = addon.operators.import_image
    scene = empty_scene()
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5)
    sphere = bpy.context.active_object
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[8:24, 16:32] = [200, 120, 80, 255]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photo.png")
    bpy.ops.object.select_all(action="DESELECT")
    sphere.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    with pytest.raises(RuntimeError, match="needs the camera that took it"):
        bpy.ops.near.import_image(filepath=str(tmp_path / "photo.png"))
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    scene.render.resolution_x = scene.render.resolution_y = 64  # square render, 3:2 photo
    with pytest.raises(NearError, match="aspect ratio"):
        imp.input_camera(scene, rgba.shape, np.eye(4))
    scene.render.resolution_x = 96
    V, K = imp.input_camera(scene, rgba.shape, np.diag([2.0, 2.0, 2.0, 1.0]))
    cam = addon.engine.scene_bridge.scene_camera(scene)
    np.testing.assert_allclose(K[:2], np.asarray(cam.K)[:2] * 0.5)  # 96x64 render -> 48x32 photo
    np.testing.assert_allclose(V[:3, :3], 2 * np.asarray(cam.viewmat)[:3, :3])
    assert not list(tmp_path.glob("*.npz"))  # nothing written by the failed import
