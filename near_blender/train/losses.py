"""Training losses of both stages (paper eq. 4, eqs. 6-10 and appendix A.2).

Stage 2 (relightable neural 3DGS synthesis)::

    L_total = L_recon + 0.3 L_pbr + 0.5 L_shadow + 1e4 L_vol + 1e-3 L_alpha
    L_recon = L1(log(I + 1), log(I_gt + 1)) + 0.2 (1 - SSIM(T(I), T(I_gt))) + 0.2 LPIPS(T(I), T(I_gt))

where T is the AgX view transform (as Blender displays the image). LPIPS needs pretrained backbone
weights; without them its term is absent and the loss dict says so (``lpips`` missing).

Stage 1 (LH-SLAT flow matching; the path and target in :mod:`near_blender.models.flow_matching`)::

    L_stage1 = E || v_theta(z_t, t, cond) - (eps - z_0) ||^2,   z_t = (1 - t) z_0 + t eps

Every image tensor is ``[B, H, W, C]`` (the rasterizer's layout) unless stated otherwise; masks are
``[B, H, W, 1]`` in {0, 1} (or soft) and restrict a mean to the covered pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import NearError


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` [B, H, W, C] over pixels where ``mask`` [B, H, W, 1] is set (all if None)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def log_l1(pred_hdr: torch.Tensor, gt_hdr: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between ``log(I + 1)`` of prediction and ground truth (HDR, scene-linear, >= 0)."""
    _check_same(pred_hdr, gt_hdr, "HDR")
    return masked_mean((torch.log1p(pred_hdr.clamp_min(0)) - torch.log1p(gt_hdr.clamp_min(0))).abs(), mask)


def l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    _check_same(pred, gt, "map")
    return masked_mean((pred - gt).abs(), mask)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of two ``[B, H, W, C]`` images in [0, data_range] (Gaussian window 11, sigma 1.5,
    shrunk to the largest odd size that fits small images). Differentiable."""
    from pytorch_msssim import ssim as _ssim

    _check_same(a, b, "SSIM")
    H, W = a.shape[1:3]
    win = min(11, H if H % 2 else H - 1, W if W % 2 else W - 1)
    if win < 3:
        raise NearError(f"SSIM needs images of at least 3x3 pixels, got {H}x{W}.")
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    return _ssim(x, y, data_range=data_range, size_average=True, win_size=win)


def volume_loss(scales: torch.Tensor, light_scales: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Gaussian volume (product of the three scales) over all L*K Gaussians, for the intrinsic
    scales and (if given) the light-specific ones (paper eq. 10). Scales in object units."""
    loss = scales.prod(dim=-1).mean()
    if light_scales is not None:
        loss = loss + light_scales.prod(dim=-1).mean()
    return loss


def opacity_loss(opacities: torch.Tensor) -> torch.Tensor:
    """Mean of ``(1 - alpha)^2`` over all Gaussians (paper eq. 10): pushes towards opaque splats."""
    return ((1.0 - opacities) ** 2).mean()


@dataclass
class Stage2Weights:
    """Loss weights of the paper (appendix A.2)."""

    ssim: float = 0.2
    lpips: float = 0.2
    pbr: float = 0.3
    shadow: float = 0.5
    volume: float = 1e4
    alpha: float = 1e-3


class Stage2Loss:
    """The stage-2 objective. ``tonemap`` maps HDR [B,H,W,3] to display [0,1] differentiably (the
    torch AgX); ``lpips`` is an optional callable on display images returning a scalar."""

    def __init__(
        self,
        tonemap: Callable[[torch.Tensor], torch.Tensor],
        weights: Stage2Weights | None = None,
        lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.tonemap = tonemap
        self.w = weights or Stage2Weights()
        self.lpips = lpips

    def __call__(self, pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``pred``/``gt`` hold ``hdr`` [B,H,W,3] (+ ``base_color`` [..3], ``roughness``,
        ``metallic``, ``shadow`` [..1], ``mask`` [..1] in gt) and pred holds ``scales``,
        ``light_scales`` [M,3] and ``opacities`` [M]. Returns every term and ``total``."""
        out: dict[str, torch.Tensor] = {}
        mask = gt.get("mask")
        out["log_l1"] = log_l1(pred["hdr"], gt["hdr"])
        ldr_p, ldr_g = self.tonemap(pred["hdr"]), self.tonemap(gt["hdr"])
        out["ssim"] = 1.0 - ssim(ldr_p, ldr_g)
        recon = out["log_l1"] + self.w.ssim * out["ssim"]
        if self.lpips is not None:
            out["lpips"] = self.lpips(ldr_p, ldr_g)
            recon = recon + self.w.lpips * out["lpips"]
        out["recon"] = recon
        total = recon
        pbr_terms = [l1(pred[k], gt[k], mask) for k in ("base_color", "roughness", "metallic") if k in gt]
        if pbr_terms:
            out["pbr"] = torch.stack(pbr_terms).sum()
            total = total + self.w.pbr * out["pbr"]
        if "shadow" in gt:
            out["shadow"] = l1(pred["shadow"], gt["shadow"], mask)
            total = total + self.w.shadow * out["shadow"]
        if "scales" in pred:
            out["volume"] = volume_loss(pred["scales"], pred.get("light_scales"))
            total = total + self.w.volume * out["volume"]
        if "opacities" in pred:
            out["alpha"] = opacity_loss(pred["opacities"])
            total = total + self.w.alpha * out["alpha"]
        out["total"] = total
        return out


def _check_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise NearError(
            f"{what} loss: prediction {tuple(a.shape)} and target {tuple(b.shape)} differ in shape."
        )
