"""Lighting tokenizer E_l (paper sec. 3.5.2, A.2, fig. 12; published class ``Hdri_Encoder``).

Input ``[B, 9, H, W]`` (H, W multiples of 32; paper 512x512 from a 1024x512 lat-long map):
channels 0-2 the tone-mapped LDR map in [-1, 1], 3-5 the log-HDR map, 6-8 the unit direction of
every pixel (world or camera space; the module only consumes them). Output ``[B, N_L, C]``
(paper 4096 x 768). Nothing here resamples the map: rotating the environment is a rotation of
the direction channels only.

Pipeline:

1. ConvNeXt trunk (:mod:`.convnext`, Tiny-shaped in the paper config) on the 6 visual channels:
   features c2..c5 at strides 4, 8, 16, 32.
2. Direction channels -> :class:`~.encodings.FourierFeatures` (8 bands, ``pi 2^k``) at full
   resolution -> bilinearly resampled to the c3, c4, c5 grids.
3. :class:`DirectionGatedFusion` at c3, c4, c5. The paper calls it a "direction-encoding-aware
   spatial cross multi-head attention"; the published layer (whose key names we keep) is a
   per-pixel gate, and so is ours: ``g = sigmoid(MLP_1x1([v, e]))`` from the visual feature ``v``
   and the direction encoding ``e``; ``out = GELU(GN(Conv1x1([v * g, GELU(GN(Conv1x1(e)))])))
   + Conv1x1(v)``. The direction code decides, pixel by pixel and channel by channel, which
   visual features pass, and is also injected additively, so identical radiance seen in
   different directions yields different features (the "learnable positional encoding" of the
   paper).
4. Each fused map is bilinearly resized to the token grid (``sqrt(N_L)`` square), the three are
   concatenated and projected by a 1x1 conv to width C -> tokens in row-major order.
5. :class:`~.rope_transformer.RoPETransformer` (1D RoPE over the row-major token index, RMSNorm,
   pre-norm; the published checkpoint repeats one weight-tied layer twice) and a final RMSNorm.

State-dict keys match the published ``Hdri_Encoder`` (``stage1..stage4``, ``dir_encoder.freq_bands``,
``fusion_c3/c4/c5.{dir_adapter, attention, fusion, residual_proj}``, ``projection_conv``,
``transformer_encoder.layers.<i>.*``, ``ln_final.weight``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import NearError
from .convnext import convnext_stages
from .encodings import FourierFeatures
from .model_config import merge_config
from .registry import register_model
from .rope_transformer import RoPETransformer


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    if groups < 1 or channels % groups != 0:
        raise NearError(
            f"GroupNorm with {groups} groups cannot split {channels} channels; "
            "use channel counts divisible by min(8, C // 4)."
        )
    return nn.GroupNorm(groups, channels)


class DirectionGatedFusion(nn.Module):
    """Fuse a visual map ``[B, V, h, w]`` with a direction encoding ``[B, E, h, w]`` -> ``[B, O, h, w]``.

    See the module docstring (step 3). GroupNorm groups: ``min(8, V // 4)`` for the direction
    adapter, ``min(4, hid // 4)`` for the gate's hidden layer (``hid = max(16, V // 8)``),
    ``min(8, O // 4)`` for the output.
    """

    def __init__(self, visual_dim: int, dir_dim: int, out_dim: int) -> None:
        super().__init__()
        self.visual_dim, self.dir_dim, self.out_dim = visual_dim, dir_dim, out_dim
        hid = max(16, visual_dim // 8)
        self.dir_adapter = nn.Sequential(
            nn.Conv2d(dir_dim, visual_dim, 1), _group_norm(min(8, visual_dim // 4), visual_dim), nn.GELU()
        )
        self.attention = nn.Sequential(
            nn.Conv2d(visual_dim + dir_dim, hid, 1),
            _group_norm(min(4, hid // 4), hid),
            nn.GELU(),
            nn.Conv2d(hid, visual_dim, 1),
            nn.Sigmoid(),
        )
        self.fusion = nn.Sequential(
            nn.Conv2d(2 * visual_dim, out_dim, 1), _group_norm(min(8, out_dim // 4), out_dim), nn.GELU()
        )
        self.residual_proj = nn.Conv2d(visual_dim, out_dim, 1) if visual_dim != out_dim else nn.Identity()

    def gate(self, visual: Tensor, direction: Tensor) -> Tensor:
        """The per-pixel, per-channel gate ``[B, V, h, w]`` in (0, 1)."""
        return self.attention(torch.cat([visual, direction], dim=1))

    def forward(self, visual: Tensor, direction: Tensor) -> Tensor:
        gated = visual * self.gate(visual, direction)
        fused = self.fusion(torch.cat([gated, self.dir_adapter(direction)], dim=1))
        return fused + self.residual_proj(visual)


@register_model("Hdri_Encoder", "LightingTokenizer")
class LightingTokenizer(nn.Module):
    """Environment map conditioning ``[B, 9, H, W]`` -> lighting tokens ``[B, num_tokens, output_dim]``.

    Constructor arguments use the published names (``output_dim``, ``num_tokens``,
    ``cnn_out_channels``, ``n_heads``, ``num_transformer_layers``, ``rope_base``,
    ``pretrained_path``) plus ours for the trunk and training details. ``pretrained_path`` is
    accepted for checkpoint-JSON compatibility and ignored: weights come from the checkpoint file.
    """

    PUBLISHED_NAME = "Hdri_Encoder"
    NUM_INPUT_CHANNELS = 9
    NUM_VISUAL_CHANNELS = 6

    def __init__(
        self,
        output_dim: int = 768,
        num_tokens: int = 4096,
        cnn_out_channels: int = 256,
        n_heads: int = 8,
        num_transformer_layers: int = 2,
        rope_base: float = 10000.0,
        pretrained_path: str | None = None,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        dir_freq_bands: int = 8,
        tie_transformer_weights: bool = True,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        grid = math.isqrt(num_tokens)
        if num_tokens < 1 or grid * grid != num_tokens:
            raise NearError(f"num_tokens must be a perfect square (the token grid), got {num_tokens}.")
        if len(dims) != 4 or len(depths) != 4:
            raise NearError(f"The tokenizer's ConvNeXt trunk has 4 stages; got dims {list(dims)}.")
        self.output_dim, self.num_tokens, self.grid = output_dim, num_tokens, grid
        self.pretrained_path = pretrained_path  # kept for the {name, args} round trip only

        self.dir_encoder = FourierFeatures(3, dir_freq_bands)
        e = self.dir_encoder.out_channels
        stages = convnext_stages(self.NUM_VISUAL_CHANNELS, depths, dims, drop_path_rate)
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.fusion_c3 = DirectionGatedFusion(dims[1], e, cnn_out_channels)
        self.fusion_c4 = DirectionGatedFusion(dims[2], e, cnn_out_channels)
        self.fusion_c5 = DirectionGatedFusion(dims[3], e, cnn_out_channels)
        self.projection_conv = nn.Conv2d(3 * cnn_out_channels, output_dim, 1)
        self.transformer_encoder = RoPETransformer(
            output_dim, n_heads, num_transformer_layers, mlp_ratio=mlp_ratio, dropout=dropout,
            rope_base=rope_base, tie_weights=tie_transformer_weights,
        )  # fmt: skip
        self.ln_final = nn.RMSNorm(output_dim, eps=1e-6)
        self._init_weights()

    # -- configs -------------------------------------------------------------------------------
    @classmethod
    def paper_config(cls, **overrides: Any) -> dict[str, Any]:
        """Published sizes: ConvNeXt-Tiny trunk, 4096 tokens x 768, 2 tied layers, 8 heads."""
        base = {
            "output_dim": 768,
            "num_tokens": 4096,
            "cnn_out_channels": 256,
            "n_heads": 8,
            "num_transformer_layers": 2,
            "rope_base": 10000.0,
            "pretrained_path": None,
            "depths": [3, 3, 9, 3],
            "dims": [96, 192, 384, 768],
            "dir_freq_bands": 8,
            "tie_transformer_weights": True,
            "mlp_ratio": 4.0,
            "dropout": 0.1,
            "drop_path_rate": 0.1,
        }
        return merge_config(cls, base, overrides)

    @classmethod
    def tiny_config(cls, **overrides: Any) -> dict[str, Any]:
        """CPU-size model for tests and the default CPU stack: 64 tokens x 64, ~0.2M parameters (64x64 maps)."""
        base = {
            "output_dim": 64,
            "num_tokens": 64,
            "cnn_out_channels": 32,
            "n_heads": 4,
            "num_transformer_layers": 2,
            "rope_base": 10000.0,
            "pretrained_path": None,
            "depths": [1, 1, 2, 1],
            "dims": [16, 32, 48, 64],
            "dir_freq_bands": 8,
            "tie_transformer_weights": True,
            "mlp_ratio": 4.0,
            "dropout": 0.0,
            "drop_path_rate": 0.0,
        }
        return merge_config(cls, base, overrides)

    def _init_weights(self) -> None:
        """Convs: Kaiming normal (fan_out), zero bias; Linear: truncated normal 0.02; norms: 1 / 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- parts -----------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.NUM_INPUT_CHANNELS:
            raise NearError(
                f"The lighting tokenizer takes [B, 9, H, W] (LDR, log-HDR, directions), got {tuple(x.shape)}."
            )
        H, W = x.shape[-2:]
        if H < 32 or W < 32 or H % 32 or W % 32:
            raise NearError(f"The conditioning map must be a multiple of 32 pixels per side, got {W}x{H}.")
        if not x.is_floating_point():
            raise NearError(f"The conditioning map must be floating point, got {x.dtype}.")

    def multiscale_features(self, x: Tensor) -> Tensor:
        """Fused multi-scale features on the token grid, ``[B, 3 cnn_out_channels, g, g]``."""
        self._check_input(x)
        visual, dirs = x[:, :6], x[:, 6:]
        enc = self.dir_encoder(dirs)
        c2 = self.stage1(visual)
        c3 = self.stage2(c2)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        size = (self.grid, self.grid)
        outs = []
        for feat, fusion in ((c3, self.fusion_c3), (c4, self.fusion_c4), (c5, self.fusion_c5)):
            e = F.interpolate(enc, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(F.interpolate(fusion(feat, e), size=size, mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 9, H, W]`` -> tokens ``[B, num_tokens, output_dim]`` (row-major over the token grid)."""
        proj = self.projection_conv(self.multiscale_features(x))
        tokens = proj.flatten(2).transpose(1, 2)
        return self.ln_final(self.transformer_encoder(tokens))
