"""The projected Z_s: an image lifted onto the prior's voxels through its camera."""

from __future__ import annotations

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.image_projection import project_image_features
from near_blender.render.camera import intrinsics_from_fov, look_at
from tests.models_stage2._stage2_helpers import sphere_voxels

W = H = 64
EYE = np.array([1.6, -1.2, 0.5])


def _setup():
    coords = sphere_voxels(0.3).numpy()
    centres = (coords + 0.5) / 64 - 0.5
    normals = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    V, K = look_at(tuple(EYE)), intrinsics_from_fov(40, W, H)
    rgba = np.zeros((H, W, 4), np.float32)
    rgba[:, : W // 2] = [0.8, 0.1, 0.1, 1.0]  # red left half, blue right half, opaque
    rgba[:, W // 2 :] = [0.1, 0.1, 0.8, 1.0]
    return coords, centres, normals, V, K, rgba


def test_front_voxels_take_the_pixel_colour_back_voxels_are_unseen() -> None:
    coords, centres, normals, V, K, rgba = _setup()
    f = project_image_features(rgba, V, K, coords)
    assert f.shape == (len(coords), 8) and f.dtype == np.float32
    to_eye = EYE - centres
    to_eye /= np.linalg.norm(to_eye, axis=1, keepdims=True)
    facing = (normals * to_eye).sum(1)
    seen = f[:, 3] > 0.5
    assert seen[facing > 0.4].mean() > 0.9 and not seen[facing < -0.2].any()
    assert (f[facing < -0.2, 7] > 4.6).all() and (f[seen, 7] <= 4.6).all()  # 1.5 + 2 px of ~1.5 voxels
    np.testing.assert_allclose(f[:, 4:7], to_eye, atol=1e-5)
    cam = centres @ V[:3, :3].T + V[:3, 3]
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    left, right = seen & (u < W / 2 - 1), seen & (u > W / 2 + 1)
    assert left.sum() > 50 and right.sum() > 50
    np.testing.assert_allclose(f[left, :3], np.tile([0.8, 0.1, 0.1], (left.sum(), 1)), atol=1e-6)
    np.testing.assert_allclose(f[right, :3], np.tile([0.1, 0.1, 0.8], (right.sum(), 1)), atol=1e-6)
    assert (f[~seen, :3] == 0).all()


def test_uncovered_pixels_and_a_scaled_object_frame() -> None:
    coords, centres, normals, V, K, rgba = _setup()
    base = project_image_features(rgba, V, K, coords)
    rgba[..., 3] = 0.0  # nothing covered: nothing seen
    assert project_image_features(rgba, V, K, coords)[:, 3].sum() == 0
    # the same camera in the frame of an object scaled by 2 (V @ S) sees what a camera at EYE / 2
    # sees in the object's own units ([R | t / 2]): camera coordinates differ by a factor 2 only
    rgba[..., 3] = 1.0
    S = np.diag([2.0, 2.0, 2.0, 1.0])
    half = V.copy()
    half[:3, 3] /= 2
    scaled, direct = (
        project_image_features(rgba, V @ S, K, coords),
        project_image_features(rgba, half, K, coords),
    )
    np.testing.assert_allclose(scaled, direct, atol=1e-5)
    to_eye = EYE / 2 - centres
    np.testing.assert_allclose(
        scaled[:, 4:7], to_eye / np.linalg.norm(to_eye, axis=1, keepdims=True), atol=1e-5
    )
    assert not np.allclose(scaled[:, 3], base[:, 3])  # a closer camera: another set seen


def test_bad_inputs_are_named() -> None:
    coords, _, _, V, K, rgba = _setup()
    with pytest.raises(NearError, match="RGBA"):
        project_image_features(rgba[..., :3], V, K, coords)
    with pytest.raises(NearError, match="4x4"):
        project_image_features(rgba, V[:3], K, coords)
    with pytest.raises(NearError, match="coords"):
        project_image_features(rgba, V, K, coords[:0])
