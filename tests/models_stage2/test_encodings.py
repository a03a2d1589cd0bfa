"""Channel layouts of the two sinusoidal encodings (the first layers that read them depend on it)."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models.encodings import FourierFeatures, nerf_encoding, nerf_encoding_dim


def test_nerf_encoding_layout_and_values() -> None:
    x = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    out = nerf_encoding(x, num_frequencies=2)
    assert out.shape == (1, nerf_encoding_dim(2, 2)) == (1, 10)
    # [x0, x1, sin(x0), sin(2 x0), sin(x1), sin(2 x1), cos(x0), cos(2 x0), cos(x1), cos(2 x1)]
    a, b = 0.5, -2.0
    expected = [a, b, math.sin(a), math.sin(2 * a), math.sin(b), math.sin(2 * b)]
    expected += [math.cos(a), math.cos(2 * a), math.cos(b), math.cos(2 * b)]
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)
    assert nerf_encoding(x, 2, include_input=False).shape == (1, 8)


def test_nerf_encoding_frequencies_reach_2_pow_k_minus_1() -> None:
    x = torch.tensor([[1.0]], dtype=torch.float64)
    out = nerf_encoding(x, num_frequencies=12)
    assert out.shape == (1, 25)
    assert out[0, 12].item() == pytest.approx(math.sin(2.0**11))  # last sine = sin(2^11 x)
    with pytest.raises(NearError):
        nerf_encoding(x, 0)


def test_fourier_features_layout_matches_published_direction_encoder() -> None:
    enc = FourierFeatures(3, num_freq_bands=2).double()
    assert enc.out_channels == 15
    d = torch.tensor([0.3, -0.4, 0.5], dtype=torch.float64)
    out = enc(d.view(1, 3, 1, 1).expand(1, 3, 2, 2))[0, :, 1, 0]
    expected = list(d)
    for c in d.tolist():  # per channel: sin(pi x), sin(2 pi x), cos(pi x), cos(2 pi x)
        expected += [
            math.sin(math.pi * c),
            math.sin(2 * math.pi * c),
            math.cos(math.pi * c),
            math.cos(2 * math.pi * c),
        ]
    torch.testing.assert_close(
        out, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0
    )  # fp32 buffer
    assert "freq_bands" in enc.state_dict()
    with pytest.raises(NearError):
        enc(torch.zeros(1, 4, 2, 2, dtype=torch.float64))
