"""Image condition encoders: DINOv2 ViT-L/14-reg key layout and token semantics; small trainable encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from near_blender import NearError
from near_blender.models.image_encoder import (
    DinoV2Encoder,
    PatchImageEncoder,
    dinov2_vitl14_reg_config,
    load_dinov2,
)
from near_blender.models.param_count import count_parameters


def test_vitl14_reg_matches_public_checkpoint_layout() -> None:
    with torch.device("meta"):
        enc = DinoV2Encoder(**dinov2_vitl14_reg_config())
    sd = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert sd["cls_token"] == (1, 1, 1024)
    assert sd["register_tokens"] == (1, 4, 1024)
    assert sd["pos_embed"] == (1, 1370, 1024)
    assert sd["mask_token"] == (1, 1024)
    assert sd["patch_embed.proj.weight"] == (1024, 3, 14, 14)
    assert sd["blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert sd["blocks.23.attn.proj.weight"] == (1024, 1024)
    assert sd["blocks.0.ls1.gamma"] == (1024,) and sd["blocks.0.ls2.gamma"] == (1024,)
    assert sd["blocks.0.mlp.fc1.weight"] == (4096, 1024) and sd["blocks.0.mlp.fc2.weight"] == (1024, 4096)
    assert sd["norm.weight"] == (1024,)
    assert len(sd) == 8 + 24 * 14  # 4 tokens/embeddings, patch proj w+b, norm w+b; 14 per block
    assert 300e6 < count_parameters(enc) < 310e6
    assert enc.num_tokens() == 1374


def test_tokens_are_prenorm_features_through_a_plain_layer_norm() -> None:
    torch.manual_seed(0)
    enc = PatchImageEncoder(
        img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=4, num_register_tokens=2
    )
    with torch.no_grad():
        enc.norm.weight.fill_(3.0)  # the final affine norm must not be used
    images = torch.rand(2, 3, 80, 80)
    tokens = enc.encode(images)
    assert tokens.shape == (2, 1 + 2 + 16, 32)
    pre = enc.forward_features(enc.preprocess(images))["x_prenorm"]
    torch.testing.assert_close(tokens, F.layer_norm(pre, (32,)))
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 19), atol=1e-5, rtol=0)
    # registers sit right after CLS and are identical across images (no patch content mixed in yet
    # before the blocks); interpolation is the identity at the native grid
    assert torch.equal(enc.interpolate_pos_encoding(4, 4), enc.pos_embed)
    assert enc.interpolate_pos_encoding(6, 5).shape == (1, 31, 32)
    tokens.sum().backward()
    assert enc.patch_embed.proj.weight.grad is not None


def test_missing_dinov2_weights_explain_where_to_put_them(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("NEAR_DINOV2_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(NearError, match="NEAR_DINOV2_WEIGHTS"):
        load_dinov2()
