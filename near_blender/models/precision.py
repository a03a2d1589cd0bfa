"""Half-precision compute as the published models run it: the weights of linear and sparse
convolution layers in float16, every normalization layer kept in float32."""

from __future__ import annotations

import torch
from torch import nn

from ..sparse.conv import SubMConv3d

# layers whose weights follow the model's compute precision (LayerNorm32 and friends do not)
HALF_PRECISION_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, SubMConv3d)


def set_layer_precision(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast, in place, the parameters of every linear / sparse-conv layer under ``module`` to ``dtype``."""
    for layer in module.modules():
        if isinstance(layer, HALF_PRECISION_LAYERS):
            for p in layer.parameters():
                p.data = p.data.to(dtype)
