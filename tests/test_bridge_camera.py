"""Camera bridge vs Blender itself: world_to_camera_view and calc_matrix_camera on random cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender import NearError
from near_blender.render.camera import camera_from_view_matrices
from tests.bpy_session import bpy, empty_scene, import_addon

pytestmark = pytest.mark.bpy

from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Euler, Vector  # noqa: E402

bridge = import_addon().engine.scene_bridge


def _random_camera(scene, rng, kind="PERSP", exact_percentage=False):
    cam_data = bpy.data.cameras.new("cam")
    obj = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(obj)
    scene.camera = obj
    cam_data.type = kind
    cam_data.lens = float(rng.uniform(10, 200))
    cam_data.ortho_scale = float(rng.uniform(0.5, 20))
    cam_data.sensor_fit = str(rng.choice(["AUTO", "HORIZONTAL", "VERTICAL"]))
    cam_data.sensor_width = float(rng.uniform(10, 50))
    cam_data.sensor_height = float(rng.uniform(10, 50))
    cam_data.shift_x = float(rng.uniform(-0.5, 0.5))
    cam_data.shift_y = float(rng.uniform(-0.5, 0.5))
    cam_data.clip_start = float(rng.uniform(0.01, 1))
    cam_data.clip_end = float(rng.uniform(50, 500))
    r = scene.render
    r.resolution_x = int(rng.integers(4, 500)) * 4
    r.resolution_y = int(rng.integers(4, 500)) * 4
    # world_to_camera_view ignores the percentage; the renderer truncates the scaled size to whole
    # pixels (which changes the aspect slightly), so the comparison with it uses exact percentages.
    pct = rng.choice([25, 50, 100, 150, 200]) if exact_percentage else rng.integers(10, 200)
    r.resolution_percentage = int(pct)
    r.pixel_aspect_x = float(rng.uniform(0.5, 2))
    r.pixel_aspect_y = float(rng.uniform(0.5, 2))
    obj.location = Vector(rng.uniform(-5, 5, 3).tolist())
    obj.rotation_euler = Euler(rng.uniform(-math.pi, math.pi, 3).tolist())
    obj.scale = Vector(rng.uniform(0.5, 2, 3).tolist())  # Blender ignores camera scale
    bpy.context.view_layer.update()
    return obj


def _points_in_view(obj, rng, n=100, scene=None):
    """World points whose images fall in and around the frame (Blender's own view_frame)."""
    scene = scene or bpy.context.scene
    frame = [np.array(v) for v in obj.data.view_frame(scene=scene)]
    min_x, max_x, min_y, max_y = frame[2][0], frame[1][0], frame[1][1], frame[0][1]
    a, b = rng.uniform(-0.2, 1.2, n), rng.uniform(-0.2, 1.2, n)
    depth = rng.uniform(1.0, 40.0, n)
    x, y = min_x + a * (max_x - min_x), min_y + b * (max_y - min_y)
    if obj.data.type != "ORTHO":
        x, y = x * depth / -frame[0][2], y * depth / -frame[0][2]
    local = np.stack([x, y, -depth], axis=1)
    M = np.array(obj.matrix_world.normalized())
    return local @ M[:3, :3].T + M[:3, 3]


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_projection_matches_world_to_camera_view(kind):
    rng = np.random.default_rng(7 if kind == "PERSP" else 8)
    scene = empty_scene()
    worst = 0.0
    for _ in range(50 if kind == "PERSP" else 25):
        obj = _random_camera(scene, rng, kind, exact_percentage=True)
        cam = bridge.scene_camera(scene)
        pts = _points_in_view(obj, rng)
        uv, z = cam.project(pts)
        W, H = cam.width, cam.height
        ref = np.array([tuple(world_to_camera_view(scene, obj, Vector(p.tolist()))) for p in pts])
        ref_uv = np.stack([ref[:, 0] * W, (1.0 - ref[:, 1]) * H], axis=1)
        err = np.abs(uv - ref_uv).max()
        worst = max(worst, err)
        assert err < 1e-2, (err, W, H, obj.data.sensor_fit)
        np.testing.assert_allclose(z, ref[:, 2], rtol=1e-4, atol=1e-4)  # depth along the view axis
        bpy.data.objects.remove(obj)
    print(f"{kind}: worst reprojection error {worst:.2e} px")


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_intrinsics_match_calc_matrix_camera(kind):
    rng = np.random.default_rng(11)
    scene = empty_scene()
    for _ in range(25):
        obj = _random_camera(scene, rng, kind)
        cam = bridge.scene_camera(scene)
        r = scene.render
        P = obj.calc_matrix_camera(
            bpy.context.evaluated_depsgraph_get(),
            x=cam.width,
            y=cam.height,
            scale_x=r.pixel_aspect_x,
            scale_y=r.pixel_aspect_y,
        )
        from_gl = camera_from_view_matrices(
            obj.matrix_world.normalized().inverted(), P, cam.width, cam.height
        )
        np.testing.assert_allclose(from_gl.K, cam.K, rtol=2e-5, atol=2e-3)
        np.testing.assert_allclose(from_gl.viewmat, cam.viewmat, atol=1e-5)
        assert from_gl.model == cam.model
        assert from_gl.near == pytest.approx(obj.data.clip_start, rel=1e-3)
        assert from_gl.far == pytest.approx(obj.data.clip_end, rel=1e-3)
        bpy.data.objects.remove(obj)


def test_apply_camera_round_trips():
    from near_blender.render.camera import orbit_camera

    scene = empty_scene()
    obj = _random_camera(scene, np.random.default_rng(3))
    for az, el in [(0, 0), (37, 20), (-120, -10), (200, 80)]:
        want = orbit_camera(az, el, 2.0, 40.0, 48, 32)
        bridge.apply_camera(want, obj, scene)
        bpy.context.view_layer.update()
        got = bridge.scene_camera(scene)
        np.testing.assert_allclose(got.K, want.K, atol=1e-4)
        np.testing.assert_allclose(got.viewmat, want.viewmat, atol=1e-5)


def test_panoramic_and_missing_cameras_are_clear_errors():
    scene = empty_scene()
    with pytest.raises(NearError, match="no active camera"):
        bridge.scene_camera(scene)
    obj = _random_camera(scene, np.random.default_rng(0))
    obj.data.type = "PANO"
    with pytest.raises(NearError, match="panoramic"):
        bridge.scene_camera(scene)


def test_viewport_matrices_of_a_camera_view():
    # RegionView3D in camera view uses the camera's projection; emulate with its matrices.
    scene = empty_scene()
    obj = _random_camera(scene, np.random.default_rng(5))
    cam = bridge.scene_camera(scene)

    class Region:
        width, height = cam.width, cam.height

    class RegionData:
        view_matrix = obj.matrix_world.normalized().inverted()
        window_matrix = obj.calc_matrix_camera(
            bpy.context.evaluated_depsgraph_get(),
            x=cam.width,
            y=cam.height,
            scale_x=scene.render.pixel_aspect_x,
            scale_y=scene.render.pixel_aspect_y,
        )

    vp = bridge.viewport_camera(Region(), RegionData())
    pts = _points_in_view(obj, np.random.default_rng(1))
    np.testing.assert_allclose(vp.project(pts)[0], cam.project(pts)[0], atol=1e-2)
