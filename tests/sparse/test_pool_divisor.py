"""Sparse pooling divisors: the true mean and the published TRELLIS/NeAR n + 1, by hand values."""

from __future__ import annotations

import pytest
import torch

from near_blender import NearError
from near_blender.sparse import SparseDownsample, SparseTensor, sparse_downsample

from ._grids import random_grid


def _block_and_lone_voxel() -> SparseTensor:
    """A full 2x2x2 block of ones (coarse voxel (0,0,0)) and one child of coarse voxel (2,2,2)."""
    block = [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    coords = torch.tensor([[0, *c] for c in block] + [[0, 5, 4, 4]], dtype=torch.int32)
    return SparseTensor(torch.ones(9, 1), coords)


def _value_at(x: SparseTensor, xyz: tuple[int, int, int]) -> float:
    row = (x.coords[:, 1:] == torch.tensor(xyz, dtype=x.coords.dtype)).all(dim=1)
    assert int(row.sum()) == 1
    return float(x.feats[row, 0])


def test_published_divisor_hand_values() -> None:
    out = sparse_downsample(_block_and_lone_voxel(), 2, divisor="count_plus_one")
    assert _value_at(out, (0, 0, 0)) == pytest.approx(8 / 9)
    assert _value_at(out, (2, 2, 2)) == pytest.approx(1 / 2)


def test_true_mean_hand_values() -> None:
    out = SparseDownsample(2, divisor="count")(_block_and_lone_voxel())
    assert _value_at(out, (0, 0, 0)) == pytest.approx(1.0)
    assert _value_at(out, (2, 2, 2)) == pytest.approx(1.0)


def test_published_divisor_matches_torch_scatter_mean_into_zeros() -> None:
    """The published pooling is torch.scatter_reduce(zeros, reduce="mean") with include_self."""
    x = random_grid(2, 60, 8, 5, torch.Generator().manual_seed(3))
    out = sparse_downsample(x, 2, divisor="count_plus_one")
    coarse = torch.cat([x.coords[:, :1], torch.div(x.coords[:, 1:], 2, rounding_mode="floor")], 1)
    keys, idx = torch.unique(coarse.long(), dim=0, return_inverse=True)
    ref = torch.scatter_reduce(
        torch.zeros(len(keys), 5), 0, idx[:, None].expand(-1, 5), x.feats, reduce="mean"
    )
    order = torch.unique(out.coords.long(), dim=0, return_inverse=True)[1]
    got = torch.empty_like(out.feats)
    got[order] = out.feats
    torch.testing.assert_close(got, ref)


def test_unknown_divisor_is_refused() -> None:
    with pytest.raises(NearError, match="count_plus_one"):
        SparseDownsample(2, divisor="median")
