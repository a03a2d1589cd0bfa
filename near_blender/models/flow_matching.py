"""Rectified-flow (conditional flow matching) conventions shared by training and sampling.

Time runs from data (t = 0) to noise (t = 1):

    x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) eps,     v* = (1 - sigma_min) eps - x_0

(the paper's eq. 4 is the ``sigma_min = 0`` case, TRELLIS trains with ``sigma_min = 1e-5``). The
model is called with ``1000 t``. Sampling integrates ``dx/dt = v`` from t = 1 down to 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..sparse import SparseTensor


def sample_t(
    batch: int,
    mode: str = "logit_normal",
    mean: float = 1.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training times ``[batch]`` in (0, 1): "uniform" or "logit_normal" (TRELLIS: mean 1, std 1)."""
    if mode == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    z = torch.randn(batch, generator=generator, device=device) * std + mean
    return torch.sigmoid(z)


def interpolate(
    x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, sigma_min: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, v_target)`` for per-row times ``t`` broadcastable to ``x0`` (e.g. ``[N, 1]``)."""
    x_t = (1 - t) * x0 + (sigma_min + (1 - sigma_min) * t) * eps
    v = (1 - sigma_min) * eps - x0
    return x_t, v


def flow_matching_loss(
    model: nn.Module,
    x0: SparseTensor,
    cond: torch.Tensor,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    sigma_min: float = 1e-5,
    generator: torch.Generator | None = None,
    **model_kwargs: Any,
) -> torch.Tensor:
    """Mean squared error between ``model(x_t, 1000 t, cond)`` and the target velocity.

    ``x0``: clean (normalized) latents; ``t [B]`` per batch item (default logit-normal);
    ``noise`` like ``x0.feats`` (default standard normal). Extra kwargs go to the model (e.g. the
    homogenizer's ``z_s``).
    """
    B = x0.batch_size
    if t is None:
        t = sample_t(B, generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.feats.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t_vox = t.to(x0.dtype)[x0.batch_index][:, None]
    x_t, v = interpolate(x0.feats, noise, t_vox, sigma_min)
    pred = model(x0.replace(x_t), t * 1000, cond, **model_kwargs)
    return torch.mean((pred.feats.float() - v.float()) ** 2)
