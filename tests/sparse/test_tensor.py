"""SparseTensor layout, per-batch broadcasting, down/up-sampling."""

from __future__ import annotations

import pytest
import torch

from near_blender import NearError
from near_blender.sparse import SparseTensor, sparse_cat, sparse_downsample, sparse_upsample


def make() -> SparseTensor:
    c0 = torch.tensor([[0, 0, 0], [1, 0, 0], [3, 3, 3]])
    c1 = torch.tensor([[2, 2, 2], [2, 3, 2]])
    f0 = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    f1 = torch.arange(4, dtype=torch.float32).reshape(2, 2) + 10
    return SparseTensor.from_list([c0, c1], [f0, f1])


def test_layout_shape_and_indexing() -> None:
    x = make()
    assert x.coords.dtype == torch.int32
    assert x.shape == torch.Size([2, 2])
    assert x.layout == [slice(0, 3), slice(3, 5)]
    assert x.seqlens == [3, 2]
    item = x[1]
    assert item.batch_size == 1 and item.coords[:, 0].tolist() == [0, 0]
    assert torch.equal(item.feats, x.feats[3:])
    d = x.dense(4)
    assert d.shape == (2, 2, 4, 4, 4) and d[1, 0, 2, 3, 2] == 12.0


def test_per_batch_broadcast_and_errors() -> None:
    x = make()
    y = x * torch.tensor([[1.0, 2.0], [10.0, 20.0]]) + 1
    assert y.feats[0].tolist() == [1.0, 3.0]
    assert y.feats[3].tolist() == [101.0, 221.0]
    z = sparse_cat([x, y], dim=-1)
    assert z.shape == torch.Size([2, 4])
    with pytest.raises(NearError, match="broadcast"):
        _ = x + torch.ones(3, 3)
    with pytest.raises(NearError, match="grouped by batch"):
        SparseTensor(torch.zeros(2, 1), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(NearError, match=r"\[N, 4\]"):
        SparseTensor(torch.zeros(2, 1), torch.zeros(2, 3, dtype=torch.int32))


def test_downsample_mean_pools_per_item_and_upsample_restores() -> None:
    x = make()
    down = sparse_downsample(x, 2)
    assert down.scale == (2, 2, 2)
    # item 0: voxels (0,0,0),(1,0,0) -> (0,0,0) mean; (3,3,3) -> (1,1,1); item 1: both -> (1,1,1)
    assert down.coords.tolist() == [[0, 0, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]]
    assert down.feats.tolist() == [[1.0, 2.0], [4.0, 5.0], [11.0, 12.0]]
    up = sparse_upsample(down.replace(down.feats * 2), 2)
    assert up.scale == (1, 1, 1)
    assert torch.equal(up.coords, x.coords)
    assert up.feats[:, 0].tolist() == [2.0, 2.0, 8.0, 22.0, 22.0]
    with pytest.raises(NearError, match="no cached fine voxels"):
        sparse_upsample(x, 2)
