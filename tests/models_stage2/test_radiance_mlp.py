"""Radiance MLP: shapes, output activations, sine layers, SIREN init, errors, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models.encodings import nerf_encoding
from near_blender.models.radiance_mlp import RadianceMLP


def _mlp(**overrides) -> RadianceMLP:
    torch.manual_seed(0)
    return RadianceMLP(**RadianceMLP.paper_config(**overrides)).double()


def test_shapes_and_layout() -> None:
    mlp = _mlp()
    assert [m.in_features for m in mlp.mlp if isinstance(m, torch.nn.Linear)] == [32 + 39, 64, 64]
    out = mlp(torch.randn(10, 32, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64))
    assert out.shape == (10, 5) and mlp.n_extra == 2
    assert mlp.radiance(
        torch.randn(4, 32, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    ).shape == (4, 3)
    assert RadianceMLP(**RadianceMLP.paper_config(output_dim=3, n_extra=0)).output_dim == 3
    assert RadianceMLP(n_extra=4).output_dim == 7


def test_output_activations() -> None:
    mlp = _mlp()
    last = mlp.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-5.0, 0.0, 2.0, 0.0, 3.0]))
    out = mlp(torch.randn(2, 32, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    expected = torch.tensor(
        [1e-3 * math.expm1(-5.0), 0.0, 2.0, 0.5, 1 / (1 + math.exp(-3.0))], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected.expand(2, 5))
    assert out[:, :3].min() >= -1e-3  # ELU(alpha = 1e-3) never undershoots more than alpha


def test_sine_hidden_layers_and_relu_variant() -> None:
    mlp = _mlp()
    f, n = torch.randn(3, 32, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    x = torch.cat([f, nerf_encoding(torch.nn.functional.normalize(n, dim=-1), 6)], dim=-1)
    l0, l1, l2 = (m for m in mlp.mlp if isinstance(m, torch.nn.Linear))
    h = torch.sin(30.0 * l1(torch.sin(30.0 * l0(x))))
    out = l2(h)
    expected = torch.cat([torch.nn.functional.elu(out[:, :3], alpha=1e-3), torch.sigmoid(out[:, 3:])], dim=-1)
    torch.testing.assert_close(mlp(f, n), expected)
    relu = _mlp(activation="relu")
    r0, r1, r2 = (m for m in relu.mlp if isinstance(m, torch.nn.Linear))
    out_r = r2(torch.relu(r1(torch.relu(r0(x)))))
    torch.testing.assert_close(relu(f, n)[:, :3], torch.nn.functional.elu(out_r[:, :3], alpha=1e-3))
    # The normal is normalized inside: its length does not matter.
    torch.testing.assert_close(mlp(f, 7.0 * n), mlp(f, n))


def test_siren_initialisation_bounds() -> None:
    mlp = _mlp()
    l0, l1, l2 = (m for m in mlp.mlp if isinstance(m, torch.nn.Linear))
    assert l0.weight.abs().max() <= 1 / 71 and l0.weight.abs().max() > 0.9 / 71
    assert (
        l1.weight.abs().max() <= math.sqrt(6 / 64) / 30
        and l1.weight.abs().max() > 0.9 * math.sqrt(6 / 64) / 30
    )
    assert l2.bias.abs().max() <= 1 / 64


def test_errors() -> None:
    mlp = _mlp()
    with pytest.raises(NearError, match="features"):
        mlp(torch.randn(2, 31, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(NearError, match="Normals"):
        mlp(torch.randn(2, 32, dtype=torch.float64))
    with pytest.raises(NearError):
        RadianceMLP(output_dim=5, n_extra=1)
    with pytest.raises(NearError):
        RadianceMLP(activation="tanh")
    with pytest.raises(NearError):
        RadianceMLP(use_residual=True)


def test_gradients_reach_every_parameter() -> None:
    mlp = RadianceMLP(**RadianceMLP.tiny_config())
    f = torch.randn(16, 8, requires_grad=True)
    out = mlp(f, torch.randn(16, 3))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in mlp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert f.grad.abs().sum() > 0
