"""Attention over voxel sets: exact against a dense masked reference; never crosses batch items."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.sparse import (
    SparseTensor,
    attention_backend,
    resolve_attention_backend,
    sparse_cross_attention,
    sparse_self_attention,
    sparse_windowed_self_attention,
)
from near_blender.sparse import attention as attn_mod

H, D = 2, 8


def grid(seed: int, n: int = 300, res: int = 32) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    cs = [torch.unique(torch.randint(0, res, (n, 3), generator=g), dim=0) for _ in range(2)]
    cs[1] = cs[1][: n // 3]  # unequal lengths
    return SparseTensor.from_list(cs, [torch.randn(c.shape[0], 3, H, D, generator=g) for c in cs])


def masked_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """Plain softmax attention over all pairs, with disallowed pairs masked out. [N, H, D]."""
    s = torch.einsum("nhd,mhd->hnm", q, k) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hnm,mhd->nhd", s.softmax(-1), v)


def window_ids(x: SparseTensor, window: int, shift: int) -> list[tuple[int, ...]]:
    return [(int(b), *(int((c + shift) // window) for c in xyz)) for b, *xyz in x.coords.tolist()]


@pytest.fixture(params=[None, 64], ids=["one-block", "tiny-blocks"])
def block_elements(request, monkeypatch):  # noqa: ANN001, ANN201
    """Run each test with the default score-block size and with a tiny one (grouping + chunking)."""
    if request.param is not None:
        monkeypatch.setattr(attn_mod, "SDPA_BLOCK_ELEMENTS", request.param)
    return request.param


@pytest.mark.parametrize("shift", [0, 4])
def test_windowed_attention_equals_masked_dense(shift: int, block_elements) -> None:  # noqa: ANN001
    x = grid(0)
    out = sparse_windowed_self_attention(x, 8, shift).feats
    ids = window_ids(x, 8, shift)
    allowed = torch.tensor([[a == b for b in ids] for a in ids])
    q, k, v = x.feats.unbind(1)
    torch.testing.assert_close(out, masked_reference(q, k, v, allowed), atol=1e-5, rtol=1e-5)
    assert len(set(ids)) > 20  # many windows, several per item


def test_full_attention_equals_masked_dense(block_elements) -> None:  # noqa: ANN001
    x = grid(1)
    out = sparse_self_attention(x).feats
    b = x.coords[:, 0]
    q, k, v = x.feats.unbind(1)
    torch.testing.assert_close(out, masked_reference(q, k, v, b[:, None] == b[None, :]), atol=1e-5, rtol=1e-5)


def test_cross_attention_equals_per_item_reference(block_elements) -> None:  # noqa: ANN001
    x = grid(2)
    g = torch.Generator().manual_seed(7)
    kv = torch.randn(2, 5, 2, H, D, generator=g)
    q = x.replace(x.feats[:, 0])
    out = sparse_cross_attention(q, kv).feats
    for b, sl in enumerate(x.layout):
        allowed = torch.ones(sl.stop - sl.start, 5, dtype=torch.bool)
        ref = masked_reference(q.feats[sl], kv[b, :, 0], kv[b, :, 1], allowed)
        torch.testing.assert_close(out[sl], ref, atol=1e-5, rtol=1e-5)


def test_attention_never_leaks_between_batch_items() -> None:
    x = grid(3)
    g = torch.Generator().manual_seed(8)
    changed = x.feats.clone()
    changed[x.layout[1]] = torch.randn(changed[x.layout[1]].shape, generator=g) * 100
    y = x.replace(changed)
    kv = torch.randn(2, 4, 2, H, D, generator=g)
    kv2 = kv.clone()
    kv2[1] *= -50
    item0 = x.layout[0]
    for fn in (
        lambda t: sparse_self_attention(t),
        lambda t: sparse_windowed_self_attention(t, 8, 0),
        lambda t: sparse_windowed_self_attention(t, 8, 4),
    ):
        assert torch.equal(fn(x).feats[item0], fn(y).feats[item0])
        assert not torch.allclose(fn(x).feats[x.layout[1]], fn(y).feats[x.layout[1]])
    a = sparse_cross_attention(x.replace(x.feats[:, 0]), kv).feats[item0]
    b = sparse_cross_attention(y.replace(y.feats[:, 0]), kv2).feats[item0]
    assert torch.equal(a, b)


def test_backend_selection() -> None:
    cpu = torch.device("cpu")
    assert resolve_attention_backend(cpu, torch.float32) == "sdpa"
    with attention_backend("sdpa"):
        assert attn_mod.get_attention_backend() == "sdpa"
    with pytest.raises(NearError, match="needs CUDA"), attention_backend("flash"):
        resolve_attention_backend(cpu, torch.float16)
    with pytest.raises(NearError, match="Unknown attention backend"):
        attn_mod.set_attention_backend("magic")
