"""SLatFlowModel: the published trellis-image-large structure (keys, shapes, ~600M) and behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models.blocks import (
    AbsolutePositionEmbedder,
    MultiHeadRMSNorm,
    sinusoidal_time_features,
)
from near_blender.models.param_count import count_parameters
from near_blender.models.slat_flow import SLatFlowModel
from near_blender.sparse import conv_backend, spconv_available

from ._helpers import randomize, sparse_input, tiny_flow


def expected_image_large_keys() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published slat_flow_img_dit_L_64l8p2 checkpoint (from the reference notes)."""
    C, io, heads, hd = 1024, 128, 16, 64
    e: dict[str, tuple[int, ...]] = {}

    def lin(name: str, out: int, inp: int) -> None:
        e[f"{name}.weight"], e[f"{name}.bias"] = (out, inp), (out,)

    def res(p: str, cin: int, cout: int) -> None:
        e[f"{p}.norm1.weight"], e[f"{p}.norm1.bias"] = (cin,), (cin,)
        e[f"{p}.conv1.conv.weight"], e[f"{p}.conv1.conv.bias"] = (cout, 3, 3, 3, cin), (cout,)
        e[f"{p}.conv2.conv.weight"], e[f"{p}.conv2.conv.bias"] = (cout, 3, 3, 3, cout), (cout,)
        lin(f"{p}.emb_layers.1", 2 * cout, C)
        if cin != cout:
            lin(f"{p}.skip_connection", cout, cin)

    lin("t_embedder.mlp.0", C, 256)
    lin("t_embedder.mlp.2", C, C)
    lin("input_layer", io, 8)
    res("input_blocks.0", io, io)
    res("input_blocks.1", io, C)
    for i in range(24):
        p = f"blocks.{i}"
        e[f"{p}.norm2.weight"], e[f"{p}.norm2.bias"] = (C,), (C,)
        lin(f"{p}.self_attn.to_qkv", 3 * C, C)
        lin(f"{p}.self_attn.to_out", C, C)
        e[f"{p}.self_attn.q_rms_norm.gamma"] = (heads, hd)
        e[f"{p}.self_attn.k_rms_norm.gamma"] = (heads, hd)
        lin(f"{p}.cross_attn.to_q", C, C)
        lin(f"{p}.cross_attn.to_kv", 2 * C, 1024)
        lin(f"{p}.cross_attn.to_out", C, C)
        lin(f"{p}.mlp.mlp.0", 4 * C, C)
        lin(f"{p}.mlp.mlp.2", C, 4 * C)
        lin(f"{p}.adaLN_modulation.1", 6 * C, C)
    res("out_blocks.0", 2 * C, io)
    res("out_blocks.1", 2 * io, io)
    lin("out_layer", 8, io)
    return e


def test_image_large_has_published_keys_and_600m_parameters() -> None:
    with torch.device("meta"):
        model = SLatFlowModel(**SLatFlowModel.paper_config())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = expected_image_large_keys()
    assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == []
    assert got == want
    assert got["blocks.23.self_attn.q_rms_norm.gamma"] == (16, 64)
    assert got["input_blocks.0.conv1.conv.weight"] == (128, 3, 3, 3, 128)
    n = count_parameters(model)
    assert 590e6 < n < 610e6, n
    assert n == sum(math.prod(s) for s in want.values())


def test_configs_and_errors() -> None:
    assert SLatFlowModel.tiny_config()["model_channels"] == 64
    assert SLatFlowModel.tiny_config(model_channels=32)["model_channels"] == 32
    with pytest.raises(NearError, match="patch_size"):
        SLatFlowModel(**SLatFlowModel.tiny_config(patch_size=4))
    model = tiny_flow()
    x = sparse_input()
    with pytest.raises(NearError, match=r"x feats \[N, 8\]"):
        model(x.replace(x.feats[:, :4]), torch.ones(2), torch.zeros(2, 3, 16))
    with pytest.raises(NearError, match="cond"):
        model(x, torch.ones(2), torch.zeros(2, 3, 5))
    far = x.replace(x.feats, x.coords.clone().index_fill_(1, torch.tensor([1]), 70))
    with pytest.raises(NearError, match=r"\[0, 64\)"):
        model(far, torch.ones(2), torch.zeros(2, 3, 16))


def test_timestep_and_position_embeddings_follow_the_formulas() -> None:
    t = torch.tensor([0.0, 250.0, 999.0])
    emb = sinusoidal_time_features(t, 256)
    k = torch.arange(128, dtype=torch.float32)
    freqs = torch.exp(-math.log(10000) * k / 128)
    torch.testing.assert_close(emb[:, :128], torch.cos(t[:, None] * freqs))
    torch.testing.assert_close(emb[:, 128:], torch.sin(t[:, None] * freqs))
    ape = AbsolutePositionEmbedder(64)  # 64 // 3 // 2 = 10 frequencies per axis, 60 used, 4 zero-padded
    pos = torch.tensor([[3, 5, 7]])
    out = ape(pos)
    f = 1.0 / 10000 ** (torch.arange(10) / 10)
    x_part = torch.cat([torch.sin(3 * f), torch.cos(3 * f)])
    torch.testing.assert_close(out[0, :20], x_part)
    assert out.shape == (1, 64) and torch.all(out[0, 60:] == 0)
    rms = MultiHeadRMSNorm(4, 2)
    with torch.no_grad():
        rms.gamma.copy_(torch.arange(8.0).reshape(2, 4))
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(rms(x), x / x.norm(dim=-1, keepdim=True) * rms.gamma * 2.0)


def test_forward_batches_are_independent_and_backends_agree() -> None:
    model = randomize(tiny_flow(), seed=1).eval()
    x = sparse_input(seed=2)
    t = torch.tensor([300.0, 800.0])
    cond = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), conv_backend("torch"):
        both = model(x, t, cond)
        alone = model(x[0], t[:1], cond[:1])
    assert both.feats.shape == (x.feats.shape[0], 8)
    torch.testing.assert_close(both.feats[x.layout[0]], alone.feats, atol=1e-5, rtol=1e-5)
    assert both.feats.abs().mean() > 1e-2
    if spconv_available():
        with torch.no_grad(), conv_backend("spconv"):
            sp_out = model(x, t, cond)
        torch.testing.assert_close(sp_out.feats, both.feats, atol=1e-4, rtol=1e-4)


def test_fresh_model_predicts_zero_velocity() -> None:
    """TRELLIS init zeroes adaLN and the output layer: a fresh flow outputs exactly 0."""
    model = tiny_flow()
    out = model(sparse_input(), torch.tensor([1.0, 2.0]), torch.randn(1, 4, 16))
    assert torch.count_nonzero(out.feats) == 0
