"""Sinusoidal encodings shared by the stage-2 models.

Two flavours exist in the published NeAR code and both are reproduced exactly, because the
channel order of an encoding is baked into the first Linear/Conv layer that reads it:

* :func:`nerf_encoding` (nerfstudio's ``NeRFEncoding``, used by the view embedding and the radiance
  MLP): frequencies ``2^0 .. 2^(K-1)`` with **no** factor pi; output
  ``[x, sin(2^k x_c) (c-major, k-minor), sin(2^k x_c + pi/2) (same order)]``.
* :class:`FourierFeatures` (the lighting tokenizer's direction encoder): frequencies ``pi 2^k``;
  per input channel ``c`` the block ``[sin(pi 2^0 x_c) .. sin(pi 2^(K-1) x_c), cos(...) ..]``,
  after the raw input channels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import NearError


def nerf_encoding_dim(in_dim: int, num_frequencies: int, include_input: bool = True) -> int:
    """Output width of :func:`nerf_encoding`: ``in_dim * (2 K + include_input)``."""
    return in_dim * (2 * num_frequencies + (1 if include_input else 0))


def nerf_encoding(x: Tensor, num_frequencies: int, include_input: bool = True) -> Tensor:
    """NeRF positional encoding of ``x`` ``[..., D]`` -> ``[..., D (2K + 1)]`` (see module doc).

    The cosine half is computed as ``sin(s + pi/2)`` like the published code, so that encodings of
    large arguments (distances times 2^11) match it to the last bit rather than to ~1e-4.
    """
    if num_frequencies < 1:
        raise NearError(f"nerf_encoding needs at least one frequency, got {num_frequencies}.")
    freqs = 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=x.dtype)
    scaled = (x[..., None] * freqs).flatten(-2)  # [..., D * K], c-major
    enc = torch.sin(torch.cat([scaled, scaled + math.pi / 2.0], dim=-1))
    return torch.cat([x, enc], dim=-1) if include_input else enc


class FourierFeatures(nn.Module):
    """Per-pixel Fourier features of a channel-first map: ``[B, D, H, W] -> [B, D (2K + 1), H, W]``.

    The frequencies ``pi 2^k`` live in the persistent buffer ``freq_bands`` ``[K]`` (the published
    state dict stores them, as a frozen parameter, under ``dir_encoder.freq_bands``).
    """

    def __init__(self, in_channels: int = 3, num_freq_bands: int = 8) -> None:
        super().__init__()
        if in_channels < 1 or num_freq_bands < 1:
            raise NearError("FourierFeatures needs at least one input channel and one frequency band.")
        self.in_channels = in_channels
        self.num_freq_bands = num_freq_bands
        self.out_channels = in_channels * (2 * num_freq_bands + 1)
        self.register_buffer("freq_bands", (2.0 ** torch.arange(num_freq_bands)) * math.pi)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise NearError(f"FourierFeatures expects [B, {self.in_channels}, H, W], got {tuple(x.shape)}.")
        B, D, H, W = x.shape
        xl = x.permute(0, 2, 3, 1)  # [B, H, W, D]
        scaled = xl[..., None] * self.freq_bands.to(x.dtype)  # [B, H, W, D, K]
        sincos = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1).reshape(B, H, W, -1)
        return torch.cat([xl, sincos], dim=-1).permute(0, 3, 1, 2)
