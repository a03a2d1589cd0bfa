"""How images are compared: AgX display images over black, then PSNR / SSIM / LPIPS (bpy-free).

Every image (ground truth, ours, baselines) is a premultiplied scene-linear HDR image ``[H, W, 3]``
over a transparent background, as the dataset's view files and the rasterizer give it. It is
composited over **black** in scene-linear (the premultiplied colour as it is: AgX maps 0 to 0, so
this equals tone-mapping the object and compositing the display image over black), tone-mapped
with Blender's AgX (:func:`near_blender.render.tonemap.display_agx`, display sRGB, in [0, 1]) and
scored over the **full frame** (object and background pixels; a method that draws the object's
silhouette wrongly is penalized there). PSNR uses a data range of 1; SSIM is the Gaussian-window
SSIM of :mod:`near_blender.train.metrics`; LPIPS (AlexNet, v0.1) is reported only when its
pretrained weights are on the machine (see :mod:`near_blender.train.lpips`) and the images are at
least 32 px (AlexNet's receptive field), else ``None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..train import metrics

PSNR_CAP_DB = 100.0  # identical images: a finite number JSON can hold
LPIPS_MIN_SIZE = 32  # AlexNet's two 3x3/2 max-pools need at least 31 px: smaller images get None


def score(pred: np.ndarray, gt: np.ndarray, with_lpips: bool = True) -> dict[str, Any]:
    """``{"psnr", "ssim", "lpips"}`` of two display images ``[H, W, 3]`` in [0, 1]."""
    pred, gt = np.ascontiguousarray(pred, np.float64), np.ascontiguousarray(gt, np.float64)
    p = min(metrics.psnr(pred, gt), PSNR_CAP_DB)
    s = metrics.ssim(pred, gt)
    lp = metrics.lpips(pred, gt) if with_lpips and min(gt.shape[:2]) >= LPIPS_MIN_SIZE else None
    return {"psnr": float(p), "ssim": float(s), "lpips": None if lp is None else float(lp)}


def lpips_note() -> str | None:
    """Why LPIPS is missing (``None`` when it is available)."""
    if metrics.lpips_available():
        return None
    return (
        "LPIPS is null: its pretrained AlexNet + LPIPS v0.1 weights (alexnet-owt-7be5be79.pth, "
        "alex.pth) are not on this machine; put them in $NEAR_LPIPS_DIR to report it."
    )
