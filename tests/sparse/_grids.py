"""Helpers for the sparse tests: random sparse grids with isolated and border voxels."""

from __future__ import annotations

import torch

from near_blender.sparse import SparseTensor


def random_grid(
    batch: int, n: int, res: int, channels: int, generator: torch.Generator, border: bool = True
) -> SparseTensor:
    """``batch`` items of ~n unique voxels in ``res³``, each with an isolated voxel and border voxels."""
    coords, feats = [], []
    for _ in range(batch):
        c = torch.randint(1, res - 1, (n, 3), generator=generator)
        extra = (
            [[0, 0, 0], [res - 1, res - 1, res - 1], [0, res - 1, 3 % res], [res - 1, 0, 0]] if border else []
        )
        c = torch.cat([c, torch.tensor(extra, dtype=c.dtype).reshape(-1, 3)], 0)
        c = torch.unique(c, dim=0)
        coords.append(c)
        feats.append(torch.randn(c.shape[0], channels, generator=generator))
    # an isolated voxel far from everything in item 0 (grid of 3 * res so it has no neighbours)
    coords[0] = torch.cat([coords[0], torch.tensor([[2 * res + 5, 2 * res + 5, 2 * res + 5]])], 0)
    feats[0] = torch.cat([feats[0], torch.randn(1, channels, generator=generator)], 0)
    return SparseTensor.from_list(coords, feats)
