"""Reusable transformer blocks (for the stage-2 decoders): Swin self-attention, cross-attention to
register / lighting tokens, gradient checkpointing."""

from __future__ import annotations

import torch

from near_blender.models.blocks import (
    SparseMultiHeadAttention,
    SparseTransformerBlock,
    SparseTransformerCrossBlock,
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


def test_decoder_style_blocks_keep_batch_items_apart() -> None:
    x = sparse_input(seed=4, channels=16)
    regs = torch.randn(2, 16, 16)
    block = SparseTransformerCrossBlock(16, 16, num_heads=2, attn_mode="swin", window_size=8, shift_window=4)
    swin = SparseTransformerBlock(16, num_heads=2, attn_mode="swin", window_size=8, shift_window=0)
    assert not any("norm" in k for k in block.state_dict())  # non-affine LayerNorms by default
    out = swin(block(x, regs))
    alone = swin(block(x[0], regs[:1]))
    torch.testing.assert_close(out.feats[x.layout[0]], alone.feats, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_identical_gradients() -> None:
    x = sparse_input(seed=5)
    t, cond = torch.tensor([100.0, 600.0]), torch.randn(2, 3, 16)
    grads = []
    for ckpt in (False, True):
        model = randomize(tiny_flow(use_checkpoint=ckpt), seed=7)
        model(x, t, cond).feats.pow(2).sum().backward()
        grads.append(model.blocks[0].self_attn.to_qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
