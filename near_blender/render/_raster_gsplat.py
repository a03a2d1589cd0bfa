"""The gsplat (CUDA) backend of :func:`near_blender.render.rasterize` (private).

Maps our contract onto ``gsplat.rasterization(..., render_mode="RGB+ED", packed=False)``: gsplat
appends the expected depth as the last channel (a zero background for it) and chunks channels above
32 internally, so any feature count D works.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .. import NearError

_FAILED: list[str] = []  # why gsplat failed at run time in this process (auto falls back to torch)


def mark_failed(reason: str) -> None:
    """Remember that gsplat failed to run (e.g. its kernels did not compile): ``auto`` stops trying."""
    _FAILED.append(reason)


def gsplat_status() -> str | None:
    """None if gsplat can run here, else the reason why not (for messages)."""
    return _FAILED[0] if _FAILED else _static_status()


@functools.cache
def _static_status() -> str | None:
    if not torch.cuda.is_available():
        return "CUDA is not available (no NVIDIA GPU or a CPU-only torch build)"
    try:
        import gsplat  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"gsplat cannot be imported ({type(e).__name__}: {e})"
    return None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    backgrounds: Tensor | None,
    mode: str,
    camera_model: str,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run gsplat; inputs already validated (CUDA tensors, float32)."""
    reason = gsplat_status()
    if reason is not None:
        raise NearError(f"The gsplat backend cannot run: {reason}. Use backend='torch' (or 'auto').")
    from gsplat import rasterization

    D = features.shape[-1]
    try:
        colors, alphas, _ = rasterization(
            means, quats, scales, opacities, features, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, packed=False,
            backgrounds=backgrounds, render_mode="RGB+ED", rasterize_mode=mode,
            camera_model=camera_model,
        )  # fmt: skip
    except (ImportError, RuntimeError, OSError) as e:
        raise NearError(
            f"gsplat failed ({type(e).__name__}: {e}). Its CUDA kernels may not have compiled for "
            "this GPU/toolkit; use backend='torch', or install a gsplat build matching your CUDA."
        ) from e
    return colors[..., :D], alphas, colors[..., D:]
