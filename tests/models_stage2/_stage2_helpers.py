"""Shared helpers for the stage-2 assembly tests: voxelized spheres, cameras, tiny stacks."""

from __future__ import annotations

import math

import numpy as np
import torch

from near_blender.models.relightable import RelightableDecoder, stage2_configs
from near_blender.render.camera import look_at
from near_blender.sparse import SparseTensor


def sphere_voxels(radius: float = 0.3, resolution: int = 64, centre=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Integer coords ``[N, 3]`` of the grid voxels the sphere surface passes through (a shell)."""
    ar = torch.arange(resolution)
    g = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), -1).reshape(-1, 3)
    p = (g.double() + 0.5) / resolution - 0.5 - torch.tensor(centre, dtype=torch.float64)
    half = 0.5 / resolution
    # distance from the voxel box to the centre: nearest and farthest points of the cube
    near = (p.abs() - half).clamp_min(0).norm(dim=-1)
    far = (p.abs() + half).norm(dim=-1)
    return g[(near <= radius) & (far >= radius)]


def sphere_slat(radius: float = 0.3, resolution: int = 64, channels: int = 8, seed: int = 0) -> SparseTensor:
    """A one-item SLAT on a voxelized sphere; features: centre position, outward normal, noise."""
    c = sphere_voxels(radius, resolution)
    p = (c.float() + 0.5) / resolution - 0.5
    n = torch.nn.functional.normalize(p, dim=-1)
    g = torch.Generator().manual_seed(seed)
    extra = 0.1 * torch.randn(len(c), channels - 6, generator=g)
    return SparseTensor.from_list([c], [torch.cat([2 * p, n, extra], dim=1)])


def camera(eye, width: int, height: int, fov_x_deg: float = 40.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``viewmat [4, 4]`` looking at the origin (Z up) and ``K [3, 3]`` with the given horizontal FOV."""
    fx = width / (2 * math.tan(math.radians(fov_x_deg) / 2))
    K = np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1]])
    return torch.tensor(look_at(eye), dtype=torch.float32), torch.tensor(K, dtype=torch.float32)


def tiny_stack(seed: int = 0, **overrides) -> RelightableDecoder:  # noqa: ANN003
    torch.manual_seed(seed)
    return RelightableDecoder.from_configs(stage2_configs("near-tiny", **overrides), backend="torch").eval()
