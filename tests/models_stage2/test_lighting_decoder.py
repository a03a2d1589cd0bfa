"""Lighting-aware decoder: shapes, batch isolation, attention against a reference, inputs, gradients."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from near_blender import NearError
from near_blender.models.blocks import AbsolutePositionEmbedder
from near_blender.models.gaussian_head import RelightableGaussians
from near_blender.models.lighting_decoder import LightingAwareDecoder
from near_blender.models.param_count import count_parameters
from near_blender.render.camera import look_at

C, R, L, K = 64, 4, 16, 4


def _model(**overrides) -> LightingAwareDecoder:
    torch.manual_seed(0)
    return LightingAwareDecoder(**LightingAwareDecoder.tiny_config(**overrides)).eval()


def _inputs(seed: int = 0, counts=(7, 5)):
    g = torch.Generator().manual_seed(seed)
    coords = torch.cat(
        [
            torch.cat([torch.full((n, 1), b), torch.randint(0, 64, (n, 3), generator=g)], 1)
            for b, n in enumerate(counts)
        ]
    )
    feats = torch.randn(coords.shape[0], C, generator=g)
    B = len(counts)
    regs = torch.randn(B, R, C, generator=g)
    tokens = torch.randn(B, L, C, generator=g)
    eyes = [(2.0, 0.3, 0.5), (-0.4, 2.0, 1.0), (0.0, -2.0, 0.2)]
    vms = torch.tensor(np.stack([look_at(eyes[b]) for b in range(B)]), dtype=torch.float32)
    return feats, coords, regs, tokens, vms


def test_shapes_and_ranges() -> None:
    lad = _model()
    feats, coords, regs, tokens, vms = _inputs()
    with torch.no_grad():
        g = lad(feats, regs, tokens, vms, coords=coords)
    M = coords.shape[0] * K
    assert isinstance(g, RelightableGaussians) and len(g) == M
    expected = {"means": (M, 3), "quats": (M, 4), "scales": (M, 3), "light_scales": (M, 3), "opacities": (M,)}
    expected |= {"base_color": (M, 3), "roughness": (M,), "metallic": (M,), "shadow": (M,)}
    expected |= {
        "color_feature": (M, 8),
        "normals": (M, 3),
        "batch": (M,),
        "pbr_extra": (M, 1),
        "light_extra": (M, 2),
    }
    assert g.radiance is None  # evaluated later, by the radiance MLP
    assert set(g.tensor_fields()) == set(expected)
    for name in g.tensor_fields():
        assert tuple(getattr(g, name).shape) == expected[name], name
    assert g.means.abs().max() <= 0.5 + 0.75 / 64  # inside the object box (+ offset reach)
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(M))
    torch.testing.assert_close(g.normals.norm(dim=-1), torch.ones(M))
    assert (g.scales >= 0.0009).all() and (g.light_scales >= 0.0009).all()
    assert ((g.opacities > -1) & (g.opacities < 1)).all()
    torch.testing.assert_close(g.batch, coords[:, 0].repeat_interleave(K))


def test_no_leakage_between_batch_items() -> None:
    lad = _model()
    feats, coords, regs, tokens, vms = _inputs()
    n0 = int((coords[:, 0] == 0).sum())
    with torch.no_grad():
        ref = lad(feats, regs, tokens, vms, coords=coords)
        feats2, regs2, tokens2, vms2 = feats.clone(), regs.clone(), tokens.clone(), vms.clone()
        feats2[n0:] += 3.0 * torch.randn_like(feats2[n0:])
        regs2[1] = torch.randn(R, C)
        tokens2[1] = torch.randn(L, C)
        vms2[1] = torch.tensor(look_at((0.0, 0.0, 3.0), up=(0.0, 1.0, 0.0)), dtype=torch.float32)
        out = lad(feats2, regs2, tokens2, vms2, coords=coords)
    m0 = ref.batch == 0
    for name in ref.tensor_fields():
        assert torch.equal(getattr(ref, name)[m0], getattr(out, name)[m0]), name  # bitwise
    assert not torch.allclose(ref.color_feature[~m0], out.color_feature[~m0])
    # A different number of voxels in item 1 leaves item 0 unchanged too (up to BLAS blocking).
    feats3, coords3, *_ = _inputs(counts=(7, 11))
    with torch.no_grad():
        out3 = lad(
            torch.cat([feats[:n0], feats3[n0:]]),
            regs,
            tokens,
            vms,
            coords=torch.cat([coords[:n0], coords3[n0:]]),
        )
    torch.testing.assert_close(
        out3.color_feature[out3.batch == 0], ref.color_feature[m0], atol=1e-5, rtol=1e-5
    )


def test_voxel_order_does_not_matter() -> None:
    lad = _model()
    feats, coords, regs, tokens, vms = _inputs()
    perm = torch.randperm(coords.shape[0])  # items interleaved
    with torch.no_grad():
        ref = lad(feats, regs, tokens, vms, coords=coords)
        out = lad(feats[perm], regs, tokens, vms, coords=coords[perm])
    idx = (perm[:, None] * K + torch.arange(K)).reshape(-1)
    torch.testing.assert_close(out.color_feature, ref.color_feature[idx], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.means, ref.means[idx])


def test_block_cross_attention_matches_per_item_reference() -> None:
    """The block's register attention (shared TRELLIS module) against a per-voxel loop; voxels
    given interleaved across items must attend to their own item's context only."""
    lad = _model().double()
    attn = lad.blocks[0].register_attn
    x = torch.randn(9, C, dtype=torch.float64)
    batch = torch.tensor([1, 0, 2, 1, 1, 0, 2, 2, 1])
    ctx = torch.randn(3, 5, C, dtype=torch.float64)
    order = torch.argsort(batch, stable=True)
    from near_blender.sparse import SparseTensor

    coords = torch.cat([batch[order, None], torch.zeros(9, 3, dtype=torch.long)], 1)
    out = torch.empty(9, C, dtype=torch.float64)
    out[order] = attn(SparseTensor(x[order], coords, batch_size=3), kv=attn.context_kv(ctx)).feats
    H, D = attn.num_heads, attn.head_dim
    q = attn.to_q(x).view(9, H, D)
    kv = attn.to_kv(ctx)
    k, v = kv[..., :C].view(3, 5, H, D), kv[..., C:].view(3, 5, H, D)  # k first, then v, head-major
    ref = torch.empty(9, H, D, dtype=torch.float64)
    for i in range(9):
        b = int(batch[i])
        w = torch.softmax(torch.einsum("hd,lhd->hl", q[i], k[b]) / math.sqrt(D), dim=-1)
        ref[i] = torch.einsum("hl,lhd->hd", w, v[b])
    torch.testing.assert_close(out, attn.to_out(ref.reshape(9, C)))


def test_cached_parts_equal_the_full_forward() -> None:
    lad = _model(pe_mode="ape")
    feats, coords, regs, tokens, vms = _inputs()
    perm = torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = lad(feats[perm], regs, tokens, vms, coords=coords[perm])
        asset = lad.prepare_asset(feats[perm], regs, coords=coords[perm], batch_size=2)
        light = lad.prepare_lighting(tokens)
        views = [lad.decode(asset, light, vms) for _ in range(2)]
    assert asset.inverse is not None and asset.num_voxels == coords.shape[0]
    for g in views:
        for name in full.tensor_fields():
            assert torch.equal(getattr(g, name), getattr(full, name)), name
    with pytest.raises(NearError, match="one camera per item"):
        lad.decode(asset, light, vms[:1])
    with pytest.raises(NearError, match="lightings"):
        lad.decode(asset, lad.prepare_lighting(torch.randn(3, L, C)), vms)


def test_sparse_tensor_like_input_and_register_broadcast() -> None:
    lad = _model()
    feats, coords, regs, tokens, vms = _inputs()
    shared = regs[:1]
    with torch.no_grad():
        a = lad(SimpleNamespace(feats=feats, coords=coords), shared, tokens, vms)
        b = lad(feats, shared.expand(2, R, C), tokens, vms, coords=coords)
    torch.testing.assert_close(a.color_feature, b.color_feature)


def test_options_change_the_output() -> None:
    feats, coords, regs, tokens, vms = _inputs()
    with torch.no_grad():
        base = _model()(feats, regs, tokens, vms, coords=coords)
        for opt in ({"view_frame": "world"}, {"view_direction_space": "camera"}):
            other = _model(**opt)(feats, regs, tokens, vms, coords=coords)
            assert not torch.allclose(base.color_feature, other.color_feature), opt
            assert not torch.allclose(base.means, other.means), opt  # intrinsic heads read h + e (h^v)
        ape = _model(pe_mode="ape")(feats, regs, tokens, vms, coords=coords)
        assert not torch.allclose(base.color_feature, ape.color_feature)
        torch.testing.assert_close(base.means, ape.means)  # APE only enters the lighting branch
        sig = _model(base_color_activation="sigmoid")(feats, regs, tokens, vms, coords=coords)
    assert not torch.allclose(sig.base_color, base.base_color)


def test_ape_layout() -> None:
    e = AbsolutePositionEmbedder(20)(torch.tensor([[0, 0, 0], [1, 2, 3]]))
    assert e.shape == (2, 20)
    f = 20 // 3 // 2  # 3 frequencies per axis
    torch.testing.assert_close(e[0, :18], torch.tensor(([0.0] * f + [1.0] * f) * 3))
    torch.testing.assert_close(e[1, 0], torch.sin(torch.tensor(1.0)))
    torch.testing.assert_close(e[1, 6 + f], torch.cos(torch.tensor(2.0)))  # axis y, first cosine
    assert torch.all(e[:, 18:] == 0)


def test_input_errors() -> None:
    lad = _model()
    feats, coords, regs, tokens, vms = _inputs()
    bad = [
        ((feats[:, :10], regs, tokens, vms, coords), "features"),
        ((feats, regs, tokens, vms, coords[:, 1:]), "coords"),
        ((feats, regs, tokens, vms, coords.float()), "coords"),
        ((feats, regs[:1], tokens[:1], vms[:1], coords), "batch indices"),
        ((feats, regs, tokens, vms[0], coords), r"\[B, 4, 4\]"),
        ((feats, regs[..., :8], tokens, vms, coords), "registers"),
        ((feats, regs, tokens[..., :8], vms, coords), "light tokens"),
        ((feats, regs, torch.zeros(3, L, C), vms, coords), "light tokens"),
        ((feats, regs, tokens, vms, None), "SparseTensor"),
    ]
    for (f, r, t, v, c), msg in bad:
        with pytest.raises(NearError, match=msg):
            lad(f, r, t, v, coords=c)
    out_of_grid = coords.clone()
    out_of_grid[0, 1] = 64
    with pytest.raises(NearError, match="0..63"):
        lad(feats, regs, tokens, vms, coords=out_of_grid)
    nan_cam = vms.clone()
    nan_cam[0, 0, 0] = float("nan")
    with pytest.raises(NearError, match="NaN"):
        lad(feats, regs, tokens, nan_cam, coords=coords)
    with pytest.raises(NearError):
        LightingAwareDecoder(**LightingAwareDecoder.tiny_config(view_frame="camera"))
    with pytest.raises(NearError, match="latent_channels"):
        LightingAwareDecoder(**LightingAwareDecoder.tiny_config(latent_channels=8))


def test_empty_item_and_empty_input() -> None:
    lad = _model()
    feats, coords, regs, tokens, vms = _inputs(counts=(6, 0))
    with torch.no_grad():
        g = lad(feats, regs, tokens, vms, coords=coords)
        empty = lad(feats[:0], regs, tokens, vms, coords=coords[:0])
    assert len(g) == 6 * K and torch.all(g.batch == 0)
    assert len(empty) == 0 and empty.color_feature.shape == (0, 8)


def test_state_dict_keys_are_flat_and_published() -> None:
    lad = _model()
    keys = set(lad.state_dict())
    for k in ("offset_perturbation", "input_layer.weight", "ob_views_encoder.weight", "ob_views_norm.weight",
              "ob_dists_encoder.bias", "ob_dists_norm.weight", "gs_out_layer.0.weight", "gs_out_layer.2.bias",
              "pbr_out_layer.2.weight", "scale_out_layer.weight", "rgb_out_layer.bias",
              "blocks.0.register_attn.to_q.weight", "blocks.0.register_attn.to_kv.bias",
              "blocks.1.cross_attn.to_out.weight", "blocks.1.mlp.mlp.0.weight", "blocks.1.mlp.mlp.2.bias"):  # fmt: skip
        assert k in keys, k
    assert not any(k.startswith(("view_embedding.", "heads.")) for k in keys)
    # The helper modules share the adopted layers: loading through the decoder updates them.
    sd = {k: torch.randn_like(v) if k.startswith("ob_views") else v for k, v in lad.state_dict().items()}
    lad.load_state_dict(sd, strict=True)
    assert lad.view_embedding.ob_views_encoder.weight is lad.ob_views_encoder.weight
    torch.testing.assert_close(lad.view_embedding.ob_views_encoder.weight, sd["ob_views_encoder.weight"])
    twin = copy.deepcopy(lad).double()  # copies and dtype moves keep the sharing
    assert twin.view_embedding.ob_views_encoder is twin.ob_views_encoder
    assert twin.heads.rgb_out_layer is twin.rgb_out_layer and twin.rgb_out_layer.weight.dtype == torch.float64


def test_tiny_block_count_formula() -> None:
    lad = _model()
    assert count_parameters(lad.blocks[0]) == 2 * (4 * C * C + 4 * C) + 8 * C * C + 5 * C


def test_gradients_reach_every_parameter() -> None:
    lad = _model()
    lad.train()
    feats, coords, regs, tokens, vms = _inputs()
    regs.requires_grad_(True)
    tokens.requires_grad_(True)
    g = lad(feats, regs, tokens, vms, coords=coords)
    loss = sum(
        (getattr(g, name).float() * torch.randn_like(getattr(g, name).float())).sum()
        for name in g.tensor_fields()
        if name != "batch"
    )
    loss.backward()
    for name, p in lad.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert regs.grad.abs().sum() > 0 and tokens.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    feats, coords, regs, tokens, vms = _inputs()
    grads = []
    for ckpt in (False, True):
        lad = _model(use_checkpoint=ckpt).train()
        lad(feats, regs, tokens, vms, coords=coords).color_feature.square().sum().backward()
        grads.append(lad.blocks[0].cross_attn.to_q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
