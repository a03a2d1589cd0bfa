"""A tiny Gaussian lands on the pixel the camera bridge (and so Blender) predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from near_blender.render import rasterize
from near_blender.render.camera import Camera, camera_from_blender_params, look_at, stack_cameras


def _blender_matrix_world(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A Blender camera ``matrix_world`` at ``eye`` looking at ``target`` (local -Z forward, +Y up)."""
    f = (target - eye) / np.linalg.norm(target - eye)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = r, u, -f, eye
    return M


def _centroid(alpha: np.ndarray) -> tuple[float, float]:
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    s = alpha.sum()
    return float((alpha * xs).sum() / s), float((alpha * ys).sum() / s)


def _render_point(cam: Camera, point: np.ndarray) -> np.ndarray:
    vm, K = stack_cameras([cam], dtype=torch.float64)
    f64 = torch.float64
    _, alpha, _ = rasterize(
        torch.tensor(point[None], dtype=f64), torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=f64),
        torch.full((1, 3), 1e-5, dtype=f64), torch.tensor([0.9], dtype=f64),
        torch.ones(1, 1, dtype=f64), vm, K, cam.width, cam.height,
        near_plane=cam.near, camera_model=cam.model, backend="torch",
    )  # fmt: skip
    return alpha[0, ..., 0].numpy()


@pytest.mark.parametrize(
    "kind, params",
    [
        ("PERSP", {"lens": 35.0, "shift_x": 0.07, "shift_y": -0.04}),
        ("PERSP", {"lens": 50.0, "sensor_fit": "VERTICAL", "pixel_aspect_x": 1.0}),
        ("ORTHO", {"ortho_scale": 3.0, "shift_x": -0.05}),
    ],
)
def test_point_projects_to_bridge_pixel(kind: str, params: dict) -> None:
    rng = np.random.default_rng(9)
    M = _blender_matrix_world(np.array([4.0, -3.0, 2.0]), np.array([0.1, 0.2, 0.3]))
    cam = camera_from_blender_params(M, type=kind, width=96, height=72, **params)
    for _ in range(5):
        point = np.array([0.1, 0.2, 0.3]) + rng.uniform(-0.6, 0.6, 3)
        uv, _ = cam.project(point[None])
        u, v = float(uv[0, 0]), float(uv[0, 1])
        assert 4 < u < 92 and 4 < v < 68
        alpha = _render_point(cam, point)
        cx, cy = _centroid(alpha)
        assert abs(cx - u) < 0.05 and abs(cy - v) < 0.05, (cx, cy, u, v)
        j, i = np.unravel_index(alpha.argmax(), alpha.shape)
        assert i == int(np.floor(u)) and j == int(np.floor(v))  # the peak sits in the predicted pixel


def test_pixel_centre_convention() -> None:
    """A point exactly on a pixel centre gives a symmetric footprint around that pixel."""
    K = np.array([[60.0, 0, 16.0], [0, 60.0, 12.0], [0, 0, 1]])
    cam = Camera(look_at([0.0, -5.0, 0.0], [0.0, 0.0, 0.0]), K, 32, 24)
    # the world point that projects to pixel (10, 7)'s centre (10.5, 7.5)
    x = (10.5 - 16.0) / 60.0 * 5.0
    z = -(7.5 - 12.0) / 60.0 * 5.0  # camera y is down, world z up
    alpha = _render_point(cam, np.array([x, 0.0, z]))
    assert alpha.argmax() == 7 * 32 + 10
    assert np.isclose(alpha[7, 9], alpha[7, 11], rtol=1e-9) and np.isclose(
        alpha[6, 10], alpha[8, 10], rtol=1e-9
    )
