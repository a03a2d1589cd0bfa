"""Stage-2 assembly: cached path == full path, image geometry, per-item cameras, exact culling,
configs and errors."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models import relightable
from near_blender.models.param_count import build_on_meta, count_parameters
from near_blender.models.registry import get_model_class
from near_blender.models.relightable import IMAGE_KEYS, RelightableDecoder, stage2_configs
from near_blender.sparse import SparseTensor
from tests.models_stage2._stage2_helpers import camera, sphere_slat, tiny_stack


def _two_cameras(W: int = 40, H: int = 32):
    v0, k0 = camera((1.4, 0.5, 0.6), W, H)
    v1, k1 = camera((-0.6, -1.3, 0.9), W, H, fov_x_deg=35.0)
    return torch.stack([v0, v1]), torch.stack([k0, k1])


def _batch_slat() -> SparseTensor:
    a, b = sphere_slat(0.14, seed=1), sphere_slat(0.1, seed=2)
    return SparseTensor.from_list([a.coords[:, 1:], b.coords[:, 1:]], [a.feats, b.feats])


def test_cached_path_equals_full_path() -> None:
    model = tiny_stack(decoder={"register_mode": "aggregate"})
    slat = _batch_slat()
    env = torch.randn(2, 9, 64, 64)
    vms, Ks = _two_cameras()
    with torch.no_grad():
        full = model(slat, env, vms, Ks, 40, 32)
        asset = model.encode_asset(slat)
        light = model.encode_lighting(env)
        other = model.decode_view(asset, light, *_two_cameras(24, 20), 24, 20)  # reuse for another view
        cached = model.decode_view(asset, light, vms, Ks, 40, 32)
    assert set(full) == set(IMAGE_KEYS) and other["hdr"].shape == (2, 20, 24, 3)
    for k in IMAGE_KEYS:
        assert torch.equal(full[k], cached[k]), k  # bitwise
    assert float(full["alpha"].amax()) > 0.1  # something was rendered


def test_image_geometry_and_alpha_zero_outside_the_projection() -> None:
    model = tiny_stack(seed=3)
    lad = model.renderer
    with torch.no_grad():  # base and light-specific scales at their floor: a tight, known footprint
        lad.scale_out_layer.weight.zero_()
        lad.scale_out_layer.bias.zero_()
        K = lad.layout.num_gaussians
        lad.gs_out_layer[2].weight[6 * K : 9 * K].zero_()
        lad.gs_out_layer[2].bias[6 * K : 9 * K].zero_()
    slat = sphere_slat(0.15)
    W, H = 72, 48
    eye = (1.2, -0.9, 0.7)
    vm, Kmat = camera(eye, W, H)
    with torch.no_grad():
        asset, light = model.encode_asset(slat), model.encode_lighting(torch.randn(1, 9, 64, 64))
        g = model.gaussians(asset, light, vm[None])
        out = model.render_gaussians(g, vm[None], Kmat[None], W, H)
    for k, c in (("hdr", 3), ("base_color", 3), ("normal", 3), ("alpha", 1), ("depth", 1), ("shadow", 1)):
        assert out[k].shape == (1, H, W, c), k
    alpha = out["alpha"][0, ..., 0]
    # Bounding sphere of every Gaussian's 3.33-sigma extent, seen from the camera as a cone.
    R = float(g.means.norm(dim=-1).max() + 3.33 * torch.maximum(g.scales, g.light_scales).max())
    D = math.dist(eye, (0, 0, 0))
    fx = float(Kmat[0, 0])
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([(xs - W / 2) / fx, (ys - H / 2) / fx, torch.ones_like(xs)], -1)
    angle = torch.acos(
        torch.nn.functional.normalize(rays, dim=-1)[..., 2]
    )  # from the optical axis (-> origin)
    outside = angle > math.asin(R / D) + 3.0 / fx  # + 3 px for the 2D low-pass filter
    assert outside.sum() > 0.5 * W * H and torch.all(alpha[outside] == 0)
    for k in ("hdr", "base_color", "depth", "normal", "shadow"):
        assert torch.all(out[k][0][outside] == 0), k
    assert float(alpha.sum()) > 5.0  # the asset is there
    cy = float((alpha * ys).sum() / alpha.sum())
    cx = float((alpha * xs).sum() / alpha.sum())
    assert abs(cx - W / 2) < 2.0 and abs(cy - H / 2) < 2.0  # centred where the camera looks
    inside = alpha > 0.05
    nz = out["normal"][0][inside].norm(dim=-1)
    torch.testing.assert_close(nz, torch.ones_like(nz), atol=1e-4, rtol=0)  # unit normals where covered
    depth = out["depth"][0, ..., 0][inside]
    assert float(depth.min()) > D - R - 1e-3 and float(depth.max()) < D + R + 1e-3


def test_each_item_uses_its_own_camera() -> None:
    model = tiny_stack(seed=4)
    slat = _batch_slat()
    env = torch.randn(1, 9, 64, 64)  # one lighting shared by both items
    vms, Ks = _two_cameras()
    with torch.no_grad():
        both = model(slat, env, vms, Ks, 40, 32)
        first = model(slat[0], env, vms[:1], Ks[:1], 40, 32)
        second = model(slat[1], env, vms[1:], Ks[1:], 40, 32)
    for k in IMAGE_KEYS:
        torch.testing.assert_close(both[k][:1], first[k], atol=2e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(both[k][1:], second[k], atol=2e-5, rtol=1e-4, msg=k)


def test_opacity_culling_changes_neither_images_nor_gradients(monkeypatch) -> None:
    model = tiny_stack(seed=5)
    slat = sphere_slat(0.1)
    vm, K = camera((0.7, 0.7, 0.5), 24, 24)
    env = torch.randn(1, 9, 64, 64)
    results = []
    for cutoff in (1.0 / 255.0, -2.0):
        monkeypatch.setattr(relightable, "MIN_OPACITY", cutoff)
        model.zero_grad()
        out = model(slat, env, vm[None], K[None], 24, 24)
        (out["hdr"].sum() + out["base_color"].sum() + out["alpha"].sum()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    (a, ga), (b, gb) = results
    for k in IMAGE_KEYS:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-6, rtol=1e-4, msg=k)


def test_configs() -> None:
    paper = stage2_configs("near-paper")
    assert [paper[k]["name"] for k in relightable.MODEL_NAMES] == [
        "SLatGaussianDecoder",
        "SLatGaussianRenderer",
        "Hdri_Encoder",
        "NeuralBasis",
    ]
    counts = {
        k: count_parameters(build_on_meta(get_model_class(c["name"]), c["args"])) for k, c in paper.items()
    }
    assert counts["decoder"] == 113_385_216
    assert counts["renderer"] == 59_888_096
    assert paper["renderer"]["args"]["representation_config"]["num_gaussians"] == 32
    assert (
        paper["hdri_encoder"]["args"]["num_tokens"] == 4096
        and paper["hdri_encoder"]["args"]["output_dim"] == 768
    )
    assert (
        paper["decoder"]["args"]["num_register_tokens"] == 16 and paper["decoder"]["args"]["num_blocks"] == 12
    )
    tiny = stage2_configs(
        "near-tiny",
        decoder={"register_mode": "aggregate"},
        renderer={"representation_config": {"num_gaussians": 2}},
    )
    assert tiny["decoder"]["args"]["register_mode"] == "aggregate"
    assert tiny["renderer"]["args"]["representation_config"]["num_gaussians"] == 2
    assert tiny["renderer"]["args"]["representation_config"]["voxel_size"] == 1.5  # merged, not replaced
    stack = RelightableDecoder.from_configs(stage2_configs("near-tiny"))
    assert sum(p.numel() for p in stack.parameters()) < 2_000_000  # "a few MB"
    with pytest.raises(NearError, match="near-huge"):
        stage2_configs("near-huge")
    with pytest.raises(NearError, match="encoder"):
        stage2_configs("near-tiny", encoder={})
    with pytest.raises(NearError, match="num_layerz"):
        stage2_configs("near-tiny", renderer={"num_layerz": 3})


def test_input_errors() -> None:
    model = tiny_stack()
    slat = sphere_slat(0.2)
    vm, K = camera((1.0, 1.0, 0.8), 16, 16)
    env = torch.randn(1, 9, 64, 64)
    with torch.no_grad():
        asset, light = model.encode_asset(slat), model.encode_lighting(env)
        with pytest.raises(NearError, match="Intrinsics"):
            model.decode_view(asset, light, vm[None], K, 16, 16)
        with pytest.raises(NearError, match="one camera per item"):
            model.decode_view(asset, light, torch.stack([vm, vm]), torch.stack([K, K]), 16, 16)
        with pytest.raises(NearError, match="lightings"):
            model.decode_view(
                asset, model.encode_lighting(torch.randn(2, 9, 64, 64)), vm[None], K[None], 16, 16
            )
        with pytest.raises(NearError, match=r"feats \[N, 8\]"):
            model.encode_asset(slat.replace(slat.feats[:, :5]))
        with pytest.raises(NearError, match="9, H, W"):
            model.encode_lighting(torch.randn(1, 6, 64, 64))
    cfg = stage2_configs("near-tiny", neural_basis={"input_dim": 16})
    with pytest.raises(NearError, match="do not fit together"):
        RelightableDecoder.from_configs(cfg)
    with pytest.raises(NearError, match="neural_basis"):
        RelightableDecoder.from_models({"decoder": model.decoder})
