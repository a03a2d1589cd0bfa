"""View embedding: ray geometry against hand-computed values, frames, and the embedding itself."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models.encodings import nerf_encoding
from near_blender.models.view_embedding import (
    ViewEmbedding,
    camera_centres,
    check_view_options,
    check_viewmats,
    view_rays,
    voxel_centres,
)
from near_blender.render.camera import look_at


def _viewmat(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.tensor(look_at(eye, target), dtype=torch.float64)[None]


def test_camera_centre_of_look_at() -> None:
    torch.testing.assert_close(
        camera_centres(_viewmat((2.0, -1.0, 0.5)))[0], torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    )


def test_voxel_centres_in_both_frames() -> None:
    coords = torch.tensor([[0, 0, 0], [31, 32, 63]])
    world = voxel_centres(coords, 64, "world", torch.float64)
    grid = voxel_centres(coords, 64, "grid01", torch.float64)
    torch.testing.assert_close(world[0], torch.full((3,), 0.5 / 64 - 0.5, dtype=torch.float64))
    torch.testing.assert_close(grid[1], torch.tensor([31.5, 32.5, 63.5], dtype=torch.float64) / 64)
    torch.testing.assert_close(grid - world, torch.full_like(grid, 0.5))


def test_rays_hand_computed() -> None:
    vm = _viewmat((2.0, 0.0, 0.0))  # looks down -X at the origin
    origin_voxel = voxel_centres(torch.tensor([[0, 0, 0]]), 1, "world", torch.float64)  # centre (0, 0, 0)
    batch = torch.zeros(1, dtype=torch.long)
    d, l = view_rays(origin_voxel, batch, vm, "world")
    torch.testing.assert_close(d[0], torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))
    assert l.item() == pytest.approx(2.0)
    d_cam, _ = view_rays(origin_voxel, batch, vm, "camera")
    torch.testing.assert_close(
        d_cam[0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    )  # the optical axis
    # Published frame: the same voxel sits at (0.5, 0.5, 0.5) against the unshifted camera.
    grid_voxel = voxel_centres(torch.tensor([[0, 0, 0]]), 1, "grid01", torch.float64)
    d_g, l_g = view_rays(grid_voxel, batch, vm, "world")
    assert l_g.item() == pytest.approx(math.sqrt(1.5**2 + 0.25 + 0.25))
    torch.testing.assert_close(d_g[0], torch.tensor([-1.5, 0.5, 0.5], dtype=torch.float64) / math.sqrt(2.75))


def test_grid_frame_with_shifted_camera_equals_world_frame() -> None:
    coords = torch.randint(0, 64, (20, 3))
    batch = torch.zeros(20, dtype=torch.long)
    eye = torch.tensor([1.3, -1.1, 0.8], dtype=torch.float64)
    vm = _viewmat(eye.tolist())
    vm_shift = _viewmat((eye + 0.5).tolist(), target=(0.5, 0.5, 0.5))  # the camera in grid units
    dw, lw = view_rays(voxel_centres(coords, 64, "world", torch.float64), batch, vm, "camera")
    dg, lg = view_rays(voxel_centres(coords, 64, "grid01", torch.float64), batch, vm_shift, "camera")
    torch.testing.assert_close(dw, dg)
    torch.testing.assert_close(lw, lg)


def test_each_voxel_uses_its_own_items_camera() -> None:
    vms = torch.cat([_viewmat((2.0, 0.0, 0.0)), _viewmat((0.0, 0.0, 3.0), target=(0.0, 0.0, 0.0))])
    p = torch.zeros(2, 3, dtype=torch.float64)
    d, l = view_rays(p, torch.tensor([0, 1]), vms, "world")
    torch.testing.assert_close(d, torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(l[:, 0], torch.tensor([2.0, 3.0], dtype=torch.float64))


def test_embedding_is_sum_of_two_rms_normalized_projections() -> None:
    emb = ViewEmbedding(16).double()
    assert emb.ob_views_encoder.in_features == 75 and emb.ob_dists_encoder.in_features == 25
    d = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    l = torch.rand(5, 1, dtype=torch.float64) * 3
    out = emb(d, l)

    def rms_norm(x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.square().mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)

    expected = rms_norm(emb.ob_views_encoder(nerf_encoding(d, 12))) + rms_norm(
        emb.ob_dists_encoder(nerf_encoding(l, 12))
    )
    torch.testing.assert_close(out, expected)
    # the checks the Lighting-Aware Decoder runs on its view options and cameras
    vm = _viewmat((1.5, 1.5, 1.0))
    check_view_options("grid01", "world")
    check_viewmats(vm)
    with pytest.raises(NearError, match="view frame"):
        check_view_options("object", "world")
    with pytest.raises(NearError, match=r"\[B, 4, 4\]"):
        check_viewmats(vm[0])
