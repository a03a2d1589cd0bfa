"""Surface normals of voxel shells by local PCA (near_blender.sparse.surface_normals)."""

from __future__ import annotations

import pytest
import torch

from near_blender import NearError
from near_blender.sparse.surface_normals import neighbour_offsets, voxel_surface_normals
from tests.models_stage2._stage2_helpers import sphere_voxels


def _with_batch(xyz: torch.Tensor, b: int = 0) -> torch.Tensor:
    return torch.cat([torch.full((len(xyz), 1), b, dtype=torch.long), xyz.long()], dim=1)


@pytest.mark.parametrize("radius", [0.2, 0.4])
def test_sphere_shell_normals_are_radial(radius: float) -> None:
    xyz = sphere_voxels(radius)
    n = voxel_surface_normals(_with_batch(xyz), 64, 2.5)
    radial = torch.nn.functional.normalize((xyz.float() + 0.5) / 64 - 0.5, dim=-1)
    cos = (n * radial).sum(-1).abs()
    assert torch.allclose(n.norm(dim=-1), torch.ones(len(n)), atol=1e-5)
    assert float(1 - cos.mean()) < 0.003  # mean error ~ 4 degrees or less
    assert float(cos.min()) > 0.9


def test_plane_is_exact_and_batches_do_not_mix() -> None:
    ax = torch.arange(10, 40)
    gx, gy = torch.meshgrid(ax, ax, indexing="ij")
    plane = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full((gx.numel(),), 20)], dim=1)
    wall = plane[:, [2, 0, 1]]  # the same plane facing +x, in the second batch item at the same place
    coords = torch.cat([_with_batch(plane, 0), _with_batch(wall, 1)])
    n = voxel_surface_normals(coords, 64, 2.5)
    assert torch.allclose(
        n[: len(plane)].abs(), torch.tensor([0.0, 0.0, 1.0]).expand(len(plane), 3), atol=1e-5
    )
    assert torch.allclose(
        n[len(plane) :].abs(), torch.tensor([1.0, 0.0, 0.0]).expand(len(wall), 3), atol=1e-5
    )


def test_edges_of_the_grid_and_lonely_voxels() -> None:
    # a plane on the grid's boundary (neighbours beyond it read as empty), and one isolated voxel
    ax = torch.arange(0, 64)
    gx, gy = torch.meshgrid(ax, ax, indexing="ij")
    plane = torch.stack([gx.reshape(-1), torch.zeros(gx.numel(), dtype=torch.long), gy.reshape(-1)], dim=1)
    lone = torch.tensor([[40, 40, 40]])
    n = voxel_surface_normals(_with_batch(torch.cat([plane, lone])), 64, 2.0)
    assert torch.allclose(n[:-1].abs(), torch.tensor([0.0, 1.0, 0.0]).expand(len(plane), 3), atol=1e-5)
    assert torch.equal(n[-1], torch.tensor([0.0, 0.0, 1.0]))


def test_offsets_and_bad_input() -> None:
    d, w = neighbour_offsets(1.5)
    assert len(d) == 18 and float(w.max()) < 1 and not bool((d == 0).all(-1).any())  # 6 faces + 12 edges
    with pytest.raises(NearError, match=r"\[N, 4\]"):
        voxel_surface_normals(torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(NearError, match="at least 1 voxel"):
        voxel_surface_normals(torch.zeros(5, 4, dtype=torch.long), 64, 0.5)
    assert voxel_surface_normals(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 3)
