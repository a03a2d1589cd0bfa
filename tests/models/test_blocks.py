"""Transformer blocks: Swin self-attention, the flow's modulated block against its equations,
batch independence, gradient checkpointing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from near_blender.models.blocks import (
    ModulatedSparseTransformerCrossBlock,
    SparseMultiHeadAttention,
    swin_shift,
)
from near_blender.sparse import sparse_windowed_self_attention

from ._helpers import randomize, sparse_input, tiny_flow


def test_swin_block_module_matches_functional_attention() -> None:
    assert [swin_shift(i) for i in range(4)] == [0, 4, 0, 4]
    x = sparse_input(seed=3, channels=16, lo=0, hi=24)
    attn = SparseMultiHeadAttention(16, 2, attn_mode="swin", window_size=8, shift_window=(4, 4, 4))
    out = attn(x).feats
    qkv = x.replace(attn.to_qkv(x.feats).reshape(-1, 3, 2, 8))
    ref = attn.to_out(sparse_windowed_self_attention(qkv, 8, 4).feats.reshape(-1, 16))
    torch.testing.assert_close(out, ref)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention of ``[N, H, D]`` queries over ``[L, H, D]`` keys/values -> ``[N, H * D]``."""
    w = torch.einsum("nhd,lhd->hnl", q, k) / q.shape[-1] ** 0.5
    return torch.einsum("hnl,lhd->nhd", w.softmax(-1), v).flatten(1)


def test_modulated_block_follows_its_equations() -> None:
    """One batch item through the flow's block, against the adaLN-zero equations written out."""
    x = sparse_input(seed=4, channels=16)[0]
    mod, ctx = torch.randn(1, 16), torch.randn(1, 5, 12)
    block = randomize(ModulatedSparseTransformerCrossBlock(16, 12, 2, qk_rms_norm=True), seed=1)
    with torch.no_grad():
        got = block(x, mod, ctx).feats
        s_a, c_a, g_a, s_f, c_f, g_f = block.adaLN_modulation[1](F.silu(mod)).chunk(6, dim=1)
        sa, ca = block.self_attn, block.cross_attn

        def rms(t: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
            return t / t.norm(dim=-1, keepdim=True) * norm.gamma * 8**0.5

        h = F.layer_norm(x.feats, (16,), eps=1e-6) * (1 + c_a) + s_a
        q, k, v = sa.to_qkv(h).view(-1, 3, 2, 8).unbind(1)
        y = x.feats + sa.to_out(_attention(rms(q, sa.q_rms_norm), rms(k, sa.k_rms_norm), v)) * g_a
        h = F.layer_norm(y, (16,), block.norm2.weight, block.norm2.bias, eps=1e-6)
        k, v = ca.to_kv(ctx[0]).view(-1, 2, 2, 8).unbind(1)
        y = y + ca.to_out(_attention(ca.to_q(h).view(-1, 2, 8), k, v))
        h = F.layer_norm(y, (16,), eps=1e-6) * (1 + c_f) + s_f
        lin1, lin2 = block.mlp.mlp[0], block.mlp.mlp[2]
        y = (
            y
            + F.linear(
                F.gelu(F.linear(h, lin1.weight, lin1.bias), approximate="tanh"), lin2.weight, lin2.bias
            )
            * g_f
        )
    torch.testing.assert_close(got, y, atol=1e-5, rtol=1e-5)
    assert sorted(k for k in block.state_dict() if k.startswith("norm")) == ["norm2.bias", "norm2.weight"]


def test_modulated_block_keeps_batch_items_apart() -> None:
    x = sparse_input(seed=4, channels=16)
    mod, ctx = torch.randn(2, 16), torch.randn(2, 5, 12)
    block = randomize(ModulatedSparseTransformerCrossBlock(16, 12, 2), seed=2)
    with torch.no_grad():
        out = block(x, mod, ctx)
        alone = block(x[1], mod[1:], ctx[1:])
    torch.testing.assert_close(out.feats[x.layout[1]], alone.feats, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_identical_gradients() -> None:
    x = sparse_input(seed=5)
    t, cond = torch.tensor([100.0, 600.0]), torch.randn(2, 3, 16)
    grads = []
    for ckpt in (False, True):
        model = randomize(tiny_flow(use_checkpoint=ckpt), seed=7)
        model(x, t, cond).feats.pow(2).sum().backward()
        grads.append(model.blocks[0].self_attn.to_qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
