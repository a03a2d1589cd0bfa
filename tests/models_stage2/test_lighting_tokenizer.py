"""Lighting tokenizer: shapes, the direction-rotation property, tied layers, RoPE, ConvNeXt trunk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from near_blender import NearError
from near_blender.models.convnext import ConvNeXtBlock, convnext_stages
from near_blender.models.lighting_tokenizer import LightingTokenizer
from near_blender.models.rope_transformer import apply_rope, rope_cos_sin
from near_blender.render.envmap import rotation_z, uv_to_direction

SIZE = 64  # tiny conditioning maps: 64 x 64 (the paper resizes 1024 x 512 to 512 x 512)


def _directions(size: int = SIZE) -> np.ndarray:
    """Unit world directions [3, size, size] of a lat-long map resized to a square (row 0 = top)."""
    j, i = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    return uv_to_direction(i / size, 1.0 - j / size).transpose(2, 0, 1)


def _conditioning(angle: float = 0.0, seed: int = 0) -> torch.Tensor:
    """[1, 9, S, S]: a fixed random LDR/log map; directions rotated about Z by ``angle`` only."""
    g = torch.Generator().manual_seed(seed)
    ldr = torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1
    log = torch.rand(3, SIZE, SIZE, generator=g) * 3
    d = np.einsum("ij,jhw->ihw", rotation_z(angle), _directions())
    dirs = torch.from_numpy(d).float()
    return torch.cat([ldr, log, dirs])[None]


@pytest.fixture(scope="module")
def tokenizer() -> LightingTokenizer:
    torch.manual_seed(0)
    return LightingTokenizer(**LightingTokenizer.tiny_config()).eval()


def test_shapes(tokenizer: LightingTokenizer) -> None:
    x = torch.cat([_conditioning(0.0, 0), _conditioning(1.0, 1)])
    with torch.no_grad():
        tokens = tokenizer(x)
        feats = tokenizer.multiscale_features(x)
    assert tokens.shape == (2, 64, 64)
    assert feats.shape == (2, 3 * 32, 8, 8)
    assert torch.isfinite(tokens).all()
    # Batch items are independent (the trunk has no batch statistics).
    with torch.no_grad():
        single = tokenizer(x[1:])
    torch.testing.assert_close(tokens[1:], single, atol=1e-5, rtol=1e-5)


def test_rotation_is_a_rotation_of_the_direction_channels_only(tokenizer: LightingTokenizer) -> None:
    x0 = _conditioning(0.0)
    x90, x360 = _conditioning(math.pi / 2), _conditioning(2 * math.pi)
    assert torch.equal(x0[:, :6], x90[:, :6])  # LDR and log-HDR untouched
    with torch.no_grad():
        t0, t90, t360 = tokenizer(x0), tokenizer(x90), tokenizer(x360)
    rel = (t90 - t0).norm() / t0.norm()
    assert rel > 0.05, f"tokens barely react to a 90 degree rotation ({rel:.4f})"
    torch.testing.assert_close(t360, t0, atol=1e-5, rtol=1e-5)  # a full turn changes nothing


def test_direction_gate_depends_on_direction(tokenizer: LightingTokenizer) -> None:
    fusion = tokenizer.fusion_c3
    visual = torch.randn(1, fusion.visual_dim, 4, 4)
    e1, e2 = torch.randn(1, fusion.dir_dim, 4, 4), torch.randn(1, fusion.dir_dim, 4, 4)
    with torch.no_grad():
        g1, g2 = fusion.gate(visual, e1), fusion.gate(visual, e2)
    assert ((g1 > 0) & (g1 < 1)).all()
    assert not torch.allclose(g1, g2)


def test_input_errors(tokenizer: LightingTokenizer) -> None:
    with pytest.raises(NearError, match="9, H, W"):
        tokenizer(torch.zeros(1, 6, 64, 64))
    with pytest.raises(NearError, match="multiple of 32"):
        tokenizer(torch.zeros(1, 9, 48, 64))
    with pytest.raises(NearError, match="perfect square"):
        LightingTokenizer(**LightingTokenizer.tiny_config(num_tokens=60))
    with pytest.raises(NearError, match="no constructor argument"):
        LightingTokenizer.tiny_config(widht=3)


def test_tied_layers_are_stored_twice_and_load_into_untied_layers(tokenizer: LightingTokenizer) -> None:
    layers = tokenizer.transformer_encoder.layers
    assert layers[0] is layers[1]
    sd = tokenizer.state_dict()
    assert "transformer_encoder.layers.1.linear1.weight" in sd
    assert (
        sd["transformer_encoder.layers.0.linear1.weight"].data_ptr()
        == sd["transformer_encoder.layers.1.linear1.weight"].data_ptr()
    )
    untied = LightingTokenizer(**LightingTokenizer.tiny_config(tie_transformer_weights=False)).eval()
    untied.load_state_dict(sd, strict=True)
    x = _conditioning(0.3)
    with torch.no_grad():
        torch.testing.assert_close(untied(x), tokenizer(x), atol=1e-6, rtol=1e-6)


def test_safetensors_round_trip(tokenizer: LightingTokenizer, tmp_path) -> None:
    path = tmp_path / "hdri_encoder.safetensors"
    # safetensors refuses aliased tensors: a checkpoint of tied layers stores independent copies.
    save_file({k: v.detach().clone().contiguous() for k, v in tokenizer.state_dict().items()}, str(path))
    fresh = LightingTokenizer(**LightingTokenizer.tiny_config()).eval()
    fresh.load_state_dict(load_file(str(path)), strict=True)
    x = _conditioning(0.7)
    with torch.no_grad():
        assert torch.equal(fresh(x), tokenizer(x))


def test_rope_depends_only_on_relative_position() -> None:
    cos, sin = rope_cos_sin(32, 8, 10000.0, torch.device("cpu"), torch.float64)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    qs, ks = apply_rope(q.expand(32, 8), cos, sin), apply_rope(k.expand(32, 8), cos, sin)
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(32))  # a rotation
    d1 = (qs[5] * ks[2]).sum()
    d2 = (qs[20] * ks[17]).sum()  # same offset 3
    d3 = (qs[20] * ks[2]).sum()
    torch.testing.assert_close(d1, d2)
    assert not torch.isclose(d1, d3)
    torch.testing.assert_close(qs[0], q)  # position 0 is not rotated


def test_convnext_strides_and_identity_at_init() -> None:
    stages = convnext_stages(6, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    x = torch.randn(1, 6, 64, 64)
    shapes = []
    for s in stages:
        x = s(x)
        shapes.append(tuple(x.shape))
    assert shapes == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 24, 4, 4), (1, 32, 2, 2)]
    block = ConvNeXtBlock(8)  # layer scale 1e-6: a fresh block is nearly the identity
    y = torch.randn(2, 8, 5, 5)
    assert (block(y) - y).abs().max() < 1e-4
    assert block.block[0].groups == 8 and block.block[0].kernel_size == (7, 7)
    with pytest.raises(NearError):
        convnext_stages(6, depths=(1, 1), dims=(8, 16, 24))


def test_gradients_reach_every_parameter() -> None:
    tok = LightingTokenizer(**LightingTokenizer.tiny_config())
    x = torch.cat([_conditioning(0.0), _conditioning(2.0, 3)])
    w = torch.randn(2, 64, 64)
    (tok(x) * w).sum().backward()
    for name, p in tok.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
