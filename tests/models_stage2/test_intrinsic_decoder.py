"""Intrinsic-aware decoder: published sizes and keys, block maths against a dense reference,
register modes (the global bridge), batch isolation, input errors, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from near_blender import NearError
from near_blender.models.intrinsic_decoder import IntrinsicAwareDecoder
from near_blender.models.param_count import build_on_meta, count_parameters
from near_blender.sparse import SparseTensor

C = 64
BLOCK_768 = 9_447_168


def _model(**overrides) -> IntrinsicAwareDecoder:
    torch.manual_seed(0)
    return IntrinsicAwareDecoder(**IntrinsicAwareDecoder.tiny_config(**overrides)).eval()


def _slat(seed: int = 0, counts=(60, 40), lo: int = 0, hi: int = 24) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    cs = [torch.unique(torch.randint(lo, hi, (n, 3), generator=g), dim=0) for n in counts]
    return SparseTensor.from_list(cs, [torch.randn(c.shape[0], 8, generator=g) for c in cs])


def test_paper_size_and_published_keys() -> None:
    m = build_on_meta(IntrinsicAwareDecoder, IntrinsicAwareDecoder.paper_config())
    n = count_parameters(m)
    assert n == 12 * BLOCK_768 + (8 * 768 + 768) + 16 * 768 == 113_385_216
    assert abs(n - 113.4e6) / 113.4e6 < 0.02  # the paper's 113.4M
    assert all(count_parameters(b) == BLOCK_768 for b in m.blocks)
    keys = set(m.state_dict())
    for k in ("input_layer.weight", "input_layer.bias", "reg_tokens", "blocks.0.register_attn.to_q.weight",
              "blocks.0.register_attn.to_kv.bias", "blocks.0.register_attn.to_out.weight",
              "blocks.11.attn.to_qkv.weight", "blocks.11.attn.to_out.bias", "blocks.5.mlp.mlp.0.weight",
              "blocks.5.mlp.mlp.2.bias"):  # fmt: skip
        assert k in keys, k
    assert m.state_dict()["reg_tokens"].shape == (1, 16, 768)
    assert not any("norm" in k or "register_gather" in k for k in keys)  # non-affine norms, read mode
    assert [b.attn.shift_window for b in m.blocks[:4]] == [0, 4, 0, 4]
    assert all(b.attn.window_size == 8 and b.attn.attn_mode == "windowed" for b in m.blocks)
    agg = build_on_meta(IntrinsicAwareDecoder, IntrinsicAwareDecoder.paper_config(register_mode="aggregate"))
    assert count_parameters(agg) == n + 12 * (4 * 768 * 768 + 4 * 768)


def _dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    s = torch.einsum("nhd,mhd->hnm", q, k) / math.sqrt(q.shape[-1])
    w = torch.softmax(s.masked_fill(~mask[None], float("-inf")), dim=-1)
    return torch.einsum("hnm,mhd->nhd", w, v)


def _reference(model: IntrinsicAwareDecoder, x: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense re-implementation: windows from the coords, registers per item, float64."""
    c = x.coords.long()
    batch = c[:, 0]
    h = x.feats @ model.input_layer.weight.T + model.input_layer.bias
    freq = 1.0 / 10000 ** (torch.arange(C // 3 // 2, dtype=torch.float32) / (C // 3 // 2))
    ang = c[:, 1:, None].float() * freq  # TRELLIS computes the APE in float32
    ape = torch.cat([torch.sin(ang), torch.cos(ang)], -1).reshape(len(c), -1)
    h = h + F.pad(ape, (0, C - ape.shape[1])).double()
    regs = model.reg_tokens.expand(x.batch_size, -1, -1)
    H, D = model.num_heads, C // model.num_heads

    def ln(t: torch.Tensor) -> torch.Tensor:  # LayerNorm32: float32 inside
        return F.layer_norm(t.float(), t.shape[-1:], eps=1e-6).double()

    for blk in model.blocks:
        if model.register_mode == "aggregate":
            g = blk.register_gather
            q = g.to_q(ln(regs)).reshape(x.batch_size, -1, H, D)
            k, v = g.to_kv(ln(h)).reshape(-1, 2, H, D).unbind(1)
            upd = torch.stack(
                [
                    _dense_attention(q[b], k, v, (batch == b)[None].expand(q.shape[1], -1))
                    for b in range(x.batch_size)
                ]
            )
            regs = regs + g.to_out(upd.reshape(x.batch_size, -1, C))
        a = blk.register_attn
        q = a.to_q(ln(h)).reshape(-1, H, D)
        k, v = a.to_kv(regs).reshape(x.batch_size, -1, 2, H, D).unbind(2)
        kb, vb = k[batch], v[batch]  # [N, R, H, D]: each voxel sees its item's registers
        w = torch.softmax(torch.einsum("nhd,nrhd->nhr", q, kb) / math.sqrt(D), dim=-1)
        out = torch.einsum("nhr,nrhd->nhd", w, vb)
        h = h + a.to_out(out.reshape(-1, C))
        s = blk.attn.shift_window
        w = torch.div(c[:, 1:] + s, 8, rounding_mode="floor")
        mask = (batch[:, None] == batch[None]) & (w[:, None] == w[None]).all(-1)
        q, k, v = blk.attn.to_qkv(ln(h)).reshape(-1, 3, H, D).unbind(1)
        h = h + blk.attn.to_out(_dense_attention(q, k, v, mask).reshape(-1, C))
        h = h + blk.mlp.mlp(ln(h))
    return h, regs


@pytest.mark.parametrize("mode", ["read", "aggregate"])
def test_blocks_match_a_dense_reference(mode: str) -> None:
    model = _model(register_mode=mode, num_blocks=2).double()
    x = _slat(counts=(50, 30), hi=20)
    x = x.replace(x.feats.double())
    with torch.no_grad():
        h, regs = model(x)
        ref_h, ref_regs = _reference(model, x)
    assert h.feats.shape == (len(x), C) and regs.shape == (2, 16, C)
    assert torch.equal(h.coords, x.coords)
    torch.testing.assert_close(h.feats, ref_h)
    torch.testing.assert_close(regs, ref_regs)
    if mode == "read":  # the published design returns its learned tokens unchanged
        assert torch.equal(regs, model.reg_tokens.expand(2, -1, -1))


def _two_clusters() -> SparseTensor:
    g = torch.Generator().manual_seed(5)
    near = torch.unique(torch.randint(0, 6, (40, 3), generator=g), dim=0)
    far = torch.unique(torch.randint(40, 46, (40, 3), generator=g), dim=0)
    coords = torch.cat([near, far])
    return SparseTensor.from_list([coords], [torch.randn(len(coords), 8, generator=g)])


@pytest.mark.parametrize("mode", ["read", "aggregate"])
def test_one_block_reaches_a_far_window_only_through_aggregating_registers(mode: str) -> None:
    model = _model(register_mode=mode, num_blocks=1)
    x = _two_clusters()
    n_near = int((x.coords[:, 1] < 8).sum())
    y = x.replace(x.feats.clone())
    y.feats[0] += 5.0  # perturb one voxel of the near cluster
    with torch.no_grad():
        a, ra = model(x)
        b, rb = model(y)
    far = slice(n_near, len(x))
    assert not torch.allclose(a.feats[1:n_near], b.feats[1:n_near])  # its own window always sees it
    if mode == "read":
        assert torch.equal(a.feats[far], b.feats[far])  # bitwise: no path between windows
        assert torch.equal(ra, rb)
    else:
        diff = (a.feats[far] - b.feats[far]).abs().amax(dim=-1)
        assert bool((diff > 1e-4).all())  # every far voxel hears about it, after one block
        assert not torch.allclose(ra, rb)


@pytest.mark.parametrize("mode", ["read", "aggregate"])
def test_batch_items_stay_apart(mode: str) -> None:
    model = _model(register_mode=mode)
    x = _slat()
    y = x.replace(x.feats.clone())
    y.feats[x.layout[1]] = torch.randn_like(y.feats[x.layout[1]])
    with torch.no_grad():
        a, ra = model(x)
        b, rb = model(y)
        alone, r_alone = model(x[0])
    assert torch.equal(a.feats[x.layout[0]], b.feats[x.layout[0]])
    assert torch.equal(ra[0], rb[0])
    torch.testing.assert_close(a.feats[x.layout[0]], alone.feats, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ra[:1], r_alone, atol=1e-5, rtol=1e-5)


def test_pe_mode_and_input_errors() -> None:
    x = _slat()
    with torch.no_grad():
        ape, _ = _model()(x)
        null, _ = _model(pe_mode="null")(x)
    assert not torch.allclose(ape.feats, null.feats)
    model = _model()
    with pytest.raises(NearError, match=r"feats \[N, 8\]"):
        model(x.replace(torch.randn(len(x), 7)))
    with pytest.raises(NearError, match="SparseTensor"):
        model(x.feats)
    with pytest.raises(NearError, match="Empty asset"):
        model(
            SparseTensor.from_list(
                [x.coords[:5, 1:], torch.zeros(0, 3, dtype=torch.int32)], [x.feats[:5], x.feats[:0]]
            )
        )
    bad = x.coords.clone()
    bad[0, 1] = 64
    with pytest.raises(NearError, match="0..63"):
        model(SparseTensor(x.feats, bad))
    nan = x.feats.clone()
    nan[3, 2] = float("nan")
    with pytest.raises(NearError, match="NaN"):
        model(x.replace(nan))
    for kw, msg in (({"register_mode": "both"}, "register_mode"), ({"cond_channels": 32}, "cond_channels"),
                    ({"pe_mode": "rope"}, "pe_mode"), ({"attn_mode": "shift_window"}, "attn_mode")):  # fmt: skip
        with pytest.raises(NearError, match=msg):
            IntrinsicAwareDecoder(**IntrinsicAwareDecoder.tiny_config(**kw))


@pytest.mark.parametrize("mode", ["read", "aggregate"])
def test_gradients_and_checkpointing(mode: str) -> None:
    x = _slat(counts=(30, 20))
    grads = []
    for ckpt in (False, True):
        model = _model(register_mode=mode, use_checkpoint=ckpt).train()
        h, regs = model(x)
        (h.feats.pow(2).sum() + regs.pow(2).sum()).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], msg=k)
