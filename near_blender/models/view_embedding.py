"""Per-voxel observation-view embedding of the lighting-aware decoder (paper 3.5.2).

For each voxel ``i`` of batch item ``b`` and the camera of that item (OpenCV world-to-camera
``viewmat [4, 4]``; camera centre ``c = -R^T t``, or with ``compat="published"`` the translation
of the inverted matrix, see :func:`camera_centres`):

* ``p_i`` = voxel centre, ``d_i = (p_i - c) / |p_i - c|`` (unit ray from the camera to the voxel),
  ``l_i = |p_i - c|`` (distance along the ray, object units);
* ``e_i = RMSNorm(Linear(PE12(d_i))) + RMSNorm(Linear(PE12(l_i)))`` with the 12-frequency NeRF
  encoding plus the input (:func:`~.encodings.nerf_encoding`: 75 and 25 channels).

Two conventions are options, both defaulting to what the published weights were trained with:

``frame`` -- where the voxel centres live relative to the camera. The stack's camera is in
world/object space with the object in [-0.5, 0.5]^3 (Z up).
  * ``"grid01"`` (published): ``p = (coord + 0.5) / res`` in [0, 1]^3 grid units, used with the
    camera centre **as given**. Geometrically this is the object seen from a camera displaced by
    ``-0.5`` on every axis; it is what the published renderer computes, so its weights expect it.
  * ``"world"``: ``p = (coord + 0.5) / res - 0.5``, the voxel's true position; geometrically
    consistent with the camera (identical to converting the camera into grid units by ``+0.5``).

``direction_space`` -- the frame of ``d``.
  * ``"world"`` (published code): world axes.
  * ``"camera"`` (the paper's text): rotated into the camera frame, ``d_cam = R d``.

State-dict keys (flat in the published renderer): ``ob_views_encoder``, ``ob_views_norm``,
``ob_dists_encoder``, ``ob_dists_norm``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .. import NearError
from .encodings import nerf_encoding, nerf_encoding_dim

ViewFrame = Literal["grid01", "world"]
DirectionSpace = Literal["world", "camera"]
VIEW_FRAMES = ("grid01", "world")
DIRECTION_SPACES = ("world", "camera")


def check_view_options(frame: str, direction_space: str) -> None:
    if frame not in VIEW_FRAMES:
        raise NearError(f"Unknown view frame {frame!r}; use one of {VIEW_FRAMES}.")
    if direction_space not in DIRECTION_SPACES:
        raise NearError(f"Unknown view direction space {direction_space!r}; use one of {DIRECTION_SPACES}.")


def frame_offset(frame: str) -> float:
    """What to add to world positions ([-0.5, 0.5]^3) to express them in ``frame``."""
    return 0.5 if frame == "grid01" else 0.0


def voxel_centres(
    coords_xyz: Tensor, resolution: int, frame: ViewFrame = "grid01", dtype: torch.dtype | None = None
) -> Tensor:
    """Voxel centres ``[N, 3]`` of integer coords ``[N, 3]`` (0..res-1) in ``frame``."""
    dtype = dtype or torch.get_default_dtype()
    p = (coords_xyz.to(dtype) + 0.5) / resolution
    return p - 0.5 + frame_offset(frame)


def check_viewmats(viewmats: Tensor, batch_size: int | None = None) -> None:
    if viewmats.ndim != 3 or viewmats.shape[-2:] != (4, 4):
        raise NearError(f"Cameras must be world-to-camera matrices [B, 4, 4], got {tuple(viewmats.shape)}.")
    if batch_size is not None and viewmats.shape[0] != batch_size:
        raise NearError(f"Got {viewmats.shape[0]} cameras for {batch_size} batch items; give one per item.")
    if viewmats.device.type != "meta" and not bool(torch.isfinite(viewmats).all()):
        raise NearError("A camera matrix contains NaN or Inf.")


CENTRE_METHODS = ("closed_form", "inverse")


def camera_centres(viewmats: Tensor, method: str = "closed_form") -> Tensor:
    """World-space camera centres ``[B, 3]`` of OpenCV world-to-camera matrices ``[B, 4, 4]``.

    ``"closed_form"``: ``-R^T t`` (exact for a rigid matrix); ``"inverse"``: the translation column
    of the inverted 4x4 matrix, as the published NeAR code computes it (``compat="published"``).
    The two agree to a few float steps, which the 2^11-frequency view encoding amplifies to ~1e-4.
    """
    if method == "inverse":
        return torch.linalg.inv(viewmats)[:, :3, 3]
    if method != "closed_form":
        raise NearError(f"Unknown camera-centre method {method!r}; use one of {CENTRE_METHODS}.")
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(R.transpose(1, 2) @ t[..., None])[..., 0]


def view_rays(
    centres: Tensor,
    batch: Tensor,
    viewmats: Tensor,
    direction_space: DirectionSpace = "world",
    centre_method: str = "closed_form",
) -> tuple[Tensor, Tensor]:
    """Unit directions ``[N, 3]`` from each item's camera centre to ``centres`` and distances ``[N, 1]``.

    ``centres`` and the camera centres are compared as given (see ``frame`` in the module doc);
    ``centre_method`` as in :func:`camera_centres`.
    """
    cams = camera_centres(viewmats.to(centres.dtype), centre_method)[batch]
    ray = centres - cams
    dist = ray.norm(dim=-1, keepdim=True)
    d = ray / dist.clamp_min(1e-12)
    if direction_space == "camera":
        R = viewmats[:, :3, :3].to(centres.dtype)[batch]
        d = (R @ d[..., None])[..., 0]
    return d, dist


class ViewEmbedding(nn.Module):
    """``(dirs [N, 3], dists [N, 1]) -> [N, channels]``: PE12 -> Linear -> RMSNorm, summed."""

    def __init__(self, channels: int, num_frequencies: int = 12) -> None:
        super().__init__()
        self.channels, self.num_frequencies = channels, num_frequencies
        self.ob_views_encoder = nn.Linear(nerf_encoding_dim(3, num_frequencies), channels)
        self.ob_views_norm = nn.RMSNorm(channels)
        self.ob_dists_encoder = nn.Linear(nerf_encoding_dim(1, num_frequencies), channels)
        self.ob_dists_norm = nn.RMSNorm(channels)

    def forward(self, dirs: Tensor, dists: Tensor) -> Tensor:
        e_d = self.ob_views_norm(self.ob_views_encoder(nerf_encoding(dirs, self.num_frequencies)))
        e_l = self.ob_dists_norm(self.ob_dists_encoder(nerf_encoding(dists, self.num_frequencies)))
        return e_d + e_l
