"""Per-voxel priors the Lighting-Aware Decoder reads besides its learned features (this project's
options for small models, not published).

* ``base_color_skip``: three channels of the input SLAT that hold the voxel's base colour (see
  :func:`~.gaussian_head.decode_base_color`);
* ``feature_normals``: three channels of the input SLAT that hold the voxel's mean surface normal
  (``normal_source: "features"``);
* the voxel shell's normals (``normal_source: "voxels"``, or where a feature normal is too short).

A channel option is ``{"channels": [3 ints], "mean": [3], "std": [3]}``: which channels, and the
standardization of the SLAT to undo. Normals are in the asset's voxel-grid frame, unit length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import NearError
from ..sparse.surface_normals import voxel_surface_normals
from .gaussian_head import FEATURE_NORMAL_MIN_LENGTH, RepresentationConfig


def parse_slat_channels(option: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check a renderer option that reads three channels of the input SLAT, ``{"channels": [3 ints],
    "mean": [3], "std": [3]}`` (the channels and the standardization to undo): ``base_color_skip``
    (the voxel's base colour, see :func:`~.gaussian_head.decode_base_color`) and ``feature_normals``
    (the voxel's mean surface normal, for ``normal_source: "features"``). This project's options
    for small models, not published."""
    if value is None:
        return None
    try:
        out = {k: [float(v) for v in value[k]] for k in ("mean", "std")}
        out["channels"] = [int(c) for c in value["channels"]]
    except (KeyError, TypeError, ValueError):
        raise NearError(
            f"{option} must be {{'channels': [3 ints], 'mean': [3], 'std': [3]}}, got {value!r}."
        ) from None
    if any(len(v) != 3 for v in out.values()) or min(out["channels"]) < 0:
        raise NearError(f"{option} needs 3 channels (>= 0), 3 means and 3 stds, got {value!r}.")
    return out


def read_slat_channels(
    option: str, spec: dict[str, Any] | None, slat_feats: Tensor | None, n: int
) -> Tensor | None:
    """Channels ``[N, 3]`` of the input SLAT ``slat_feats [N, C_slat]`` named by the renderer option
    ``option`` (its parsed ``spec``, see :func:`parse_slat_channels`), standardization undone;
    None when the option is not set."""
    if spec is None:
        return None
    if slat_feats is None:
        raise NearError(
            f"This decoder reads channels of its input SLAT ({option}); "
            "pass slat_feats to prepare_asset (RelightableDecoder.encode_asset does)."
        )
    ch = spec["channels"]
    if slat_feats.ndim != 2 or slat_feats.shape[0] != n or slat_feats.shape[1] <= max(ch):
        raise NearError(
            f"{option} reads SLAT channels {ch} of {n} voxels, got features "
            f"{tuple(slat_feats.shape)} (base_color_skip needs the base-colour SLAT: use_bc_slat)."
        )
    mean = torch.tensor(spec["mean"], dtype=slat_feats.dtype, device=slat_feats.device)
    std = torch.tensor(spec["std"], dtype=slat_feats.dtype, device=slat_feats.device)
    return slat_feats[:, ch] * std + mean


def voxel_normals(
    coords: Tensor,
    rep: RepresentationConfig,
    resolution: int,
    feat_normals: Tensor | None,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """``voxel_normals`` ``[N, 3]`` / ``voxel_normals_oriented`` ``[N]`` bool of the asset cache for
    ``rep.normal_source``: none (shortest axis), the voxel shell's PCA (unoriented), or the input
    SLAT's mean surface normal ``feat_normals [N, 3]`` (oriented, outward) where it is at least
    ``FEATURE_NORMAL_MIN_LENGTH`` long, the PCA elsewhere (edges and thin parts, where the voxel's
    surfaces face different ways). ``coords`` ``[N, 4]`` (batch, x, y, z)."""
    if rep.normal_source == "shortest_axis":
        return {}
    pca = voxel_surface_normals(coords, resolution, rep.normal_radius).to(dtype)
    if rep.normal_source == "voxels" or feat_normals is None:
        return {"voxel_normals": pca}
    length = feat_normals.norm(dim=-1, keepdim=True)
    good = length[:, 0] >= FEATURE_NORMAL_MIN_LENGTH
    n = torch.where(good[:, None], feat_normals / length.clamp_min(1e-8), pca)
    return {"voxel_normals": n.to(dtype), "voxel_normals_oriented": good}
