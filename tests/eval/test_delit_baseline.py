"""The delit baseline (near_blender.eval.baselines.delit_view) against closed forms: a flat slab of
voxels under a uniform sky is ``albedo x L`` per pixel (a Lambertian plane under a constant map
receives ``pi L``), with each pixel's albedo the one of the voxel its surface point lies in."""

from __future__ import annotations

import numpy as np

from near_blender.eval.baselines import delit_view, voxel_lookup
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from near_blender.render.envmap import Environment


def test_voxel_lookup_finds_the_cell_or_a_neighbour() -> None:
    coords = np.array([[32, 32, 32], [40, 10, 5]])
    pts = np.array([
        [(32.5) / 64 - 0.5, (32.2) / 64 - 0.5, (32.9) / 64 - 0.5],  # inside voxel 0
        [(41.5) / 64 - 0.5, (10.5) / 64 - 0.5, (5.5) / 64 - 0.5],  # the empty cell next to voxel 1
        [0.45, 0.45, 0.45],  # nowhere near
    ])  # fmt: skip
    assert voxel_lookup(pts, coords).tolist() == [0, 1, -1]


def test_delit_view_shades_the_voxel_colours_under_the_target_light() -> None:
    # a slab of voxels z = 31 (the plane z ~ 0), left half red, right half (y > 0) blue
    g = np.arange(8, 56)
    xy = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    coords = np.concatenate([xy, np.full((len(xy), 1), 31)], 1)
    bc = np.where((coords[:, 1:2] >= 32), np.array([[0.1, 0.2, 0.7]]), np.array([[0.8, 0.1, 0.1]]))
    # a camera straight above looking down; its "render": depth to the plane z = 0, normal +Z
    size = 32
    cam = Camera(
        look_at((0.0, 0.0, 2.0), up=(0.0, 1.0, 0.0)), intrinsics_from_fov(20.0, size, size), size, size
    )
    o, d = cam.pixel_rays()
    t = (-0.5 / 64 - o[..., 2]) / d[..., 2]  # hit the slab's centre plane (voxel 31's centre)
    depth = t * (d @ cam.forward)
    view = {
        "rgba": np.concatenate([np.zeros((size, size, 3)), np.ones((size, size, 1))], -1),
        "depth": depth,
        "normal": np.broadcast_to(np.array([0.0, 0.0, 1.0]), (size, size, 3)),
    }
    L = np.array([0.5, 1.0, 2.0])
    env = Environment(np.broadcast_to(L.astype(np.float32), (32, 64, 3)).copy(), 0.0)
    img = delit_view(view, cam, coords, bc, env)
    pts = o + d * t[..., None]
    red = pts[..., 1] < -0.02
    blue = pts[..., 1] > 0.02
    assert red.sum() > 50 and blue.sum() > 50
    np.testing.assert_allclose(
        img[red], np.broadcast_to(np.array([0.8, 0.1, 0.1]) * L, img[red].shape), rtol=5e-3
    )
    np.testing.assert_allclose(
        img[blue], np.broadcast_to(np.array([0.1, 0.2, 0.7]) * L, img[blue].shape), rtol=5e-3
    )
