"""Gaussian layout and decoding formulas against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models.gaussian_head import (
    GaussianHeads,
    GaussianLayout,
    RepresentationConfig,
    decode_base_color,
    decode_centres,
    decode_gaussians,
    decode_opacity,
    decode_rotation,
    decode_scale,
    hammersley_offsets,
    quat_to_rotmat,
    shortest_axis_normals,
)

CFG = RepresentationConfig.from_dict(None)


def test_layout_order_and_split() -> None:
    lay = GaussianLayout(num_gaussians=2, color_feature_dim=4, n_extra_pbr=1, n_extra_light=2)
    assert lay.out_channels("gs_out_layer") == 2 * 14
    assert lay.out_channels("pbr_out_layer") == 2 * 3
    assert lay.out_channels("scale_out_layer") == 2 * 3
    assert lay.out_channels("rgb_out_layer") == 2 * (4 + 1 + 2)
    out = torch.arange(28.0)[None]
    parts = lay.split("gs_out_layer", out)
    assert list(parts) == ["_xyz", "_base_color", "_scaling", "_rotation", "_opacity"]
    torch.testing.assert_close(parts["_xyz"][0], torch.tensor([[0.0, 1, 2], [3, 4, 5]]))  # Gaussian-major
    torch.testing.assert_close(parts["_rotation"][0], torch.tensor([[18.0, 19, 20, 21], [22, 23, 24, 25]]))
    torch.testing.assert_close(parts["_opacity"][0, :, 0], torch.tensor([26.0, 27]))
    heads = GaussianHeads(8, lay)
    raw = heads(torch.randn(3, 8), torch.randn(3, 8))
    assert (
        raw["_rgb"].shape == (3, 2, 4)
        and raw["_hdri2"].shape == (3, 2, 1)
        and raw["_pbr1"].shape == (3, 2, 1)
    )


def test_scale_formula() -> None:
    s = decode_scale(torch.zeros(1, 3, dtype=torch.float64), CFG)
    torch.testing.assert_close(s, torch.full((1, 3), math.sqrt(0.004**2 + 0.0009**2), dtype=torch.float64))
    big = decode_scale(torch.full((1,), 5.0, dtype=torch.float64), CFG)
    inv = 0.004 + math.log(-math.expm1(-0.004))  # softplus^-1(0.004)
    assert big.item() == pytest.approx(math.sqrt(math.log1p(math.exp(5.0 + inv)) ** 2 + 0.0009**2))
    assert decode_scale(torch.tensor([-50.0]), CFG).item() == pytest.approx(
        0.0009, rel=1e-4
    )  # the 3D filter floor
    exp_cfg = RepresentationConfig.from_dict({"scaling_activation": "exp", "scaling_bias": 0.01})
    assert decode_scale(torch.tensor([0.0]), exp_cfg).item() == pytest.approx(math.sqrt(0.01**2 + 0.0009**2))


def test_rotation_normalization() -> None:
    q = decode_rotation(torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0], [-1.0, 1, 0, 0], [0.0, 0, 0, 1]]))
    expected = torch.tensor(
        [[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 1, 0, 0], [1 / math.sqrt(2), 0, 0, 1 / math.sqrt(2)]]
    )
    torch.testing.assert_close(q, expected)


def test_opacity_tanh_offset() -> None:
    o = decode_opacity(torch.tensor([0.0, -math.log(1.1 / 0.9), 100.0, -100.0], dtype=torch.float64), 0.1)
    torch.testing.assert_close(
        o, torch.tensor([math.tanh(math.log(1.1 / 0.9)), 0.0, 1.0, -1.0], dtype=torch.float64)
    )
    assert o[0].item() == pytest.approx(0.19801, abs=1e-5)  # published inverse_tanh(0.1) = ln(1.1 / 0.9)


def test_base_color_activations() -> None:
    raw = torch.tensor([0.0, 1.0, -10.0])
    torch.testing.assert_close(
        decode_base_color(raw, "sh_dc"), torch.tensor([0.5, 0.5 + 0.28209479177387814, 0.0])
    )
    torch.testing.assert_close(decode_base_color(raw, "sigmoid"), torch.sigmoid(raw))
    with pytest.raises(NearError):
        decode_base_color(raw, "relu")  # type: ignore[arg-type]


def test_hammersley_perturbation() -> None:
    p = hammersley_offsets(4, 1.5).double()
    assert p.shape == (4, 3)
    # point i = (i/4, radical_inverse_2(i), radical_inverse_3(i)) -> atanh((2 h - 1) / 1.5)
    pts = torch.tensor(
        [[0, 0, 0], [0.25, 0.5, 1 / 3], [0.5, 0.25, 2 / 3], [0.75, 0.75, 1 / 9]], dtype=torch.float64
    )
    torch.testing.assert_close(p, torch.atanh((2 * pts - 1) / 1.5), atol=1e-6, rtol=0)


def test_centres() -> None:
    coords = torch.tensor([[0, 0, 0], [63, 10, 5]])
    raw = torch.zeros(2, 1, 3, dtype=torch.float64)
    no_pert = RepresentationConfig.from_dict({"perturb_offset": False})
    c = decode_centres(raw, coords, 64, no_pert, None)
    torch.testing.assert_close(c[:, 0], (coords.double() + 0.5) / 64 - 0.5)
    far = decode_centres(torch.full((2, 1, 3), 30.0, dtype=torch.float64), coords, 64, no_pert, None)
    torch.testing.assert_close(far - c, torch.full_like(c, 0.5 * 1.5 / 64))  # tanh -> 1: 0.75 voxel
    pert = torch.tensor([[0.2, -0.1, 0.0]], dtype=torch.float64)
    with_p = decode_centres(raw, coords, 64, CFG, pert)
    torch.testing.assert_close(with_p[0, 0] - c[0, 0], torch.tanh(pert[0]) / 64 * 0.75)
    with pytest.raises(NearError):
        decode_centres(raw, coords, 64, CFG, None)


def test_quaternion_matrix_and_shortest_axis_normals() -> None:
    s = 1 / math.sqrt(2)
    q = torch.tensor([[1.0, 0, 0, 0], [s, 0, 0, s]], dtype=torch.float64)  # identity; 90 degrees about +Z
    R = quat_to_rotmat(q)
    torch.testing.assert_close(R[1], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64))
    scales = torch.tensor([[0.1, 0.01, 0.05], [0.01, 0.1, 0.05]], dtype=torch.float64)
    pos = torch.zeros(2, 3, dtype=torch.float64)
    cam = torch.tensor([[0.0, -2, 0], [0.0, 2, 0]], dtype=torch.float64)
    n = shortest_axis_normals(q, scales, pos, cam)
    # item 0: local y = world +Y, camera on -Y -> flipped; item 1: local x rotated to +Y, camera on +Y -> kept
    torch.testing.assert_close(n, torch.tensor([[0.0, -1, 0], [0.0, 1, 0]], dtype=torch.float64))


def test_decode_gaussians_end_to_end() -> None:
    lay = GaussianLayout(num_gaussians=2, color_feature_dim=3, n_extra_pbr=1, n_extra_light=2)
    cfg = RepresentationConfig.from_dict(
        {"num_gaussians": 2, "lr": {"_rotation": 0.1}, "perturb_offset": False}
    )
    coords = torch.tensor([[0, 10, 20, 30], [1, 0, 0, 0], [0, 1, 1, 1]])
    raw = GaussianHeads(8, lay)(torch.randn(3, 8), torch.randn(3, 8))
    raw = {k: torch.zeros_like(v) for k, v in raw.items()}
    raw["_rotation"][..., 1] = 10.0  # * lr 0.1 -> q = normalize((1, 1, 0, 0))
    raw["_scaling_view"][..., 2] = -10.0  # smallest light-specific scale along local z
    cams = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, -5.0]])
    g = decode_gaussians(raw, coords, cfg, lay, None, cams, orient_offset=0.0, resolution=64)
    assert len(g) == 6
    torch.testing.assert_close(g.batch, torch.tensor([0, 0, 1, 1, 0, 0]))
    torch.testing.assert_close(g.means[0], (torch.tensor([10.0, 20, 30]) + 0.5) / 64 - 0.5)
    torch.testing.assert_close(g.quats[0], torch.tensor([1.0, 1.0, 0, 0]) / math.sqrt(2))
    # local z rotated 90 degrees about x -> -Y (world); flipped to face each item's camera
    z_axis = quat_to_rotmat(g.quats[:1])[0, :, 2]
    torch.testing.assert_close(z_axis, torch.tensor([0.0, -1.0, 0.0]))
    assert torch.all(((cams[g.batch] - g.means) * g.normals).sum(-1) >= 0)
    torch.testing.assert_close(g.normals.abs(), z_axis.abs().expand(6, 3))
    torch.testing.assert_close(g.opacities, torch.full((6,), math.tanh(math.log(1.1 / 0.9))))
    torch.testing.assert_close(g.base_color, torch.full((6, 3), 0.5))
    for t in (g.roughness, g.metallic, g.shadow):
        torch.testing.assert_close(t, torch.full((6,), 0.5))
    assert g.pbr_extra.shape == (6, 1) and g.light_extra.shape == (6, 2) and g.color_feature.shape == (6, 3)
    item1 = g.item(1)
    assert len(item1) == 2 and torch.all(item1.batch == 1)
