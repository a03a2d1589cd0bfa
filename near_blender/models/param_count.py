"""Parameter counting, and building paper-size models without allocating them.

:func:`count_parameters` counts every parameter tensor once (weight-tied layers count once, as the
paper's "36.8M distinct parameters" does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameter elements (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_on_meta(cls: type, config: dict[str, Any]) -> nn.Module:
    """``cls(**config)`` on the ``meta`` device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return cls(**config)
