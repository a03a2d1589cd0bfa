"""ConvNeXt trunk (Liu et al. 2022) written for the lighting tokenizer; no torchvision, no timm.

The four stages are returned as ``nn.Sequential(entry, blocks)`` so that a model attaching them as
``stage1 .. stage4`` gets the state-dict keys of the published tokenizer (which wrapped
torchvision's ``convnext_tiny().features``): ``stage1.0.0`` stem conv, ``stage1.0.1`` stem norm,
``stageK.0.0`` / ``stageK.0.1`` downsample norm / conv, ``stageK.1.<i>.block.{0,2,3,5}`` and
``stageK.1.<i>.layer_scale``.

Block: 7x7 depthwise conv -> LayerNorm (channels last) -> Linear(C, 4C) -> GELU -> Linear(4C, C)
-> layer scale (init 1e-6) -> stochastic depth -> residual. All norms use eps 1e-6.
ConvNeXt-Tiny: depths (3, 3, 9, 3), dims (96, 192, 384, 768); strides 4, 8, 16, 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import NearError

LN_EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``[B, C, H, W]`` map."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _ChannelsLast(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class _ChannelsFirst(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block on ``[B, C, H, W]`` (shape preserved)."""

    def __init__(self, dim: int, layer_scale_init: float = 1e-6, drop_path: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            _ChannelsLast(),
            nn.LayerNorm(dim, eps=LN_EPS),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            _ChannelsFirst(),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))
        self.drop_path = float(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer_scale * self.block(x)
        if self.training and self.drop_path > 0.0:
            keep = 1.0 - self.drop_path
            mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
            y = y * mask / keep
        return x + y


def convnext_stages(
    in_channels: int = 3,
    depths: Sequence[int] = (3, 3, 9, 3),
    dims: Sequence[int] = (96, 192, 384, 768),
    drop_path_rate: float = 0.0,
    layer_scale_init: float = 1e-6,
) -> list[nn.Sequential]:
    """The four (or ``len(dims)``) ConvNeXt stages, each ``Sequential(entry, Sequential(blocks))``.

    Stochastic depth grows linearly from 0 to ``drop_path_rate`` over all blocks (torchvision's
    schedule); it only acts in training mode.
    """
    depths, dims = list(depths), list(dims)
    if len(depths) != len(dims) or not depths:
        raise NearError(f"ConvNeXt needs as many depths as dims, got {depths} and {dims}.")
    if any(d < 1 for d in depths) or any(c < 1 for c in dims) or in_channels < 1:
        raise NearError(f"ConvNeXt depths, dims and input channels must be positive: {depths}, {dims}.")
    total = sum(depths)
    stages: list[nn.Sequential] = []
    block_id = 0
    for s, (depth, dim) in enumerate(zip(depths, dims)):
        if s == 0:
            entry = nn.Sequential(
                nn.Conv2d(in_channels, dim, kernel_size=4, stride=4, bias=True), LayerNorm2d(dim, eps=LN_EPS)
            )
        else:
            entry = nn.Sequential(
                LayerNorm2d(dims[s - 1], eps=LN_EPS), nn.Conv2d(dims[s - 1], dim, kernel_size=2, stride=2)
            )
        blocks = []
        for _ in range(depth):
            dp = drop_path_rate * block_id / (total - 1.0) if total > 1 else 0.0
            blocks.append(ConvNeXtBlock(dim, layer_scale_init, dp))
            block_id += 1
        stages.append(nn.Sequential(entry, nn.Sequential(*blocks)))
    return stages
