"""Image quality metrics of the paper's evaluation: PSNR, SSIM and (when its weights exist) LPIPS.

All take display-referred images in [0, 1] as ``[H, W, 3]`` numpy arrays or ``[B, H, W, 3]``
tensors: the evaluation tone-maps HDR renders with Blender's AgX first (as the paper does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import NearError


def _as_batch(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise NearError(f"Metrics need [H, W, C] or [B, H, W, C] images, got {tuple(t.shape)}.")
    return t


def psnr(pred: Any, gt: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels (mean over the batch of the
    per-image PSNR). Identical images give ``inf``."""
    p, g = _as_batch(pred), _as_batch(gt)
    if p.shape != g.shape:
        raise NearError(f"PSNR: shapes differ {tuple(p.shape)} vs {tuple(g.shape)}.")
    mse = ((p - g) ** 2).flatten(1).mean(1)
    vals = [math.inf if m == 0 else 10.0 * math.log10(data_range**2 / float(m)) for m in mse]
    return float(np.mean(vals))


def ssim(pred: Any, gt: Any, data_range: float = 1.0) -> float:
    """Structural similarity (Gaussian window 11, sigma 1.5; pytorch-msssim), mean over the batch."""
    from .losses import ssim as ssim_t

    p, g = _as_batch(pred), _as_batch(gt)
    return float(ssim_t(p, g, data_range=data_range))


def mean_abs_laplacian(image: Any, mask: Any) -> float:
    """Mean ``|4 I(p) - I(up) - I(down) - I(left) - I(right)|`` over the channels of ``image
    [H, W, C]`` at the pixels of ``mask [H, W]`` whose four neighbours are in the mask too (the
    object's interior): high-frequency energy, e.g. speckle. NaN when no pixel qualifies."""
    img = np.asarray(image, np.float64)
    m = np.asarray(mask, bool)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    if not inner.any():
        return float("nan")
    c = img[1:-1, 1:-1]
    lap = 4 * c - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2] - img[1:-1, 2:]
    return float(np.abs(lap[inner]).mean())


def lpips_available() -> bool:
    from .lpips import LPIPS

    return LPIPS.weights_available()


def lpips(pred: Any, gt: Any) -> float | None:
    """LPIPS (AlexNet) distance, or None when its pretrained weights are not on this machine."""
    from .lpips import LPIPS

    model = LPIPS.load_if_available()
    if model is None:
        return None
    p, g = _as_batch(pred).float(), _as_batch(gt).float()
    with torch.no_grad():
        return float(model(p, g).mean())
