"""Shared helpers for model tests: tiny random models and sparse inputs."""

from __future__ import annotations

import torch
from torch import nn

from near_blender.models.slat_flow import SLatFlowModel
from near_blender.sparse import SparseTensor

TINY = dict(model_channels=32, cond_channels=16, num_blocks=2, num_heads=2, io_block_channels=[16])


def tiny_flow(**overrides) -> SLatFlowModel:  # noqa: ANN003
    return SLatFlowModel(**SLatFlowModel.tiny_config(**{**TINY, **overrides}))


def randomize(model: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Replace every parameter with noise (zero-initialised layers would make comparisons trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def sparse_input(seed: int = 0, batch: int = 2, n: int = 120, channels: int = 8, lo: int = 20, hi: int = 36):
    g = torch.Generator().manual_seed(seed)
    cs = [torch.unique(torch.randint(lo, hi, (n, 3), generator=g), dim=0) for _ in range(batch)]
    return SparseTensor.from_list(cs, [torch.randn(c.shape[0], channels, generator=g) for c in cs])
