"""Surface normals of a sparse voxel shell from its geometry alone (local PCA; bpy-free).

A SLAT's voxels are the cells a surface passes through: a shell one or two voxels thick. Around
each voxel, the occupied cells within ``radius`` voxels spread along the surface and are thin
across it, so the eigenvector of the smallest eigenvalue of their (distance-weighted) covariance is
the surface normal, up to sign. The sign is left to the caller (the renderer flips normals to face
the camera, as it does for the Gaussians' own normals).

This is exact for planes (away from edges), accurate to a few degrees on curved surfaces whose
radius of curvature is several voxels, and rounds sharp edges over about ``radius`` voxels. It needs
no learning, so it is a stable normal for the tiny CPU model, whose learned normals are noisy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import NearError

DEFAULT_RADIUS = 2.5


def neighbour_offsets(radius: float, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Integer offsets ``[P, 3]`` with ``0 < |d| <= radius`` and their weights ``[P]``
    (``exp(-|d|^2 / radius^2)``, a soft fall-off that keeps the estimate smooth between voxels)."""
    r = int(radius)
    ax = torch.arange(-r, r + 1, device=device)
    d = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1).reshape(-1, 3)
    d2 = (d * d).sum(-1)
    keep = (d2 > 0) & (d2 <= radius * radius)
    d = d[keep]
    return d, torch.exp(-d2[keep].float() / (radius * radius))


def voxel_surface_normals(coords: Tensor, resolution: int = 64, radius: float = DEFAULT_RADIUS) -> Tensor:
    """Unit normals ``[N, 3]`` (grid axes = object axes, Z up; unoriented) of voxels ``coords [N, 4]``
    (batch, x, y, z) in a ``resolution^3`` grid, from the PCA of each voxel's occupied neighbours
    within ``radius`` voxels (neighbours of the same batch item only). A voxel with no neighbour
    gets ``(0, 0, 1)``."""
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise NearError(f"Voxel coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}.")
    if radius < 1:
        raise NearError(f"The normal estimate's radius must be at least 1 voxel, got {radius}.")
    N, dev = coords.shape[0], coords.device
    if N == 0:
        return torch.zeros(0, 3, device=dev)
    c = coords.long()
    B, R = int(c[:, 0].max()) + 1, int(resolution)
    pad = int(radius)
    S = R + 2 * pad  # a padded grid: neighbours off the edge read as empty
    occ = torch.zeros(B * S * S * S, dtype=torch.bool, device=dev)
    xyz = c[:, 1:] + pad

    def flat(b: Tensor, p: Tensor) -> Tensor:
        return ((b * S + p[..., 0]) * S + p[..., 1]) * S + p[..., 2]

    occ[flat(c[:, 0], xyz)] = True
    d, w = neighbour_offsets(radius, dev)  # [P, 3], [P]
    hit = occ[flat(c[:, 0, None], xyz[:, None, :] + d[None])].float() * w[None]  # [N, P]
    df = d.float()
    m0 = hit.sum(-1).clamp_min(1e-6)  # [N]
    mean = hit @ df / m0[:, None]  # [N, 3]
    outer = (df[:, :, None] * df[:, None, :]).reshape(-1, 9)  # [P, 9]
    cov = (hit @ outer).reshape(N, 3, 3) / m0[:, None, None] - mean[:, :, None] * mean[:, None, :]
    _, vecs = torch.linalg.eigh(cov.double())
    n = vecs[..., 0].to(torch.float32)  # eigenvector of the smallest eigenvalue
    lonely = hit.sum(-1) == 0
    if bool(lonely.any()):
        n[lonely] = torch.tensor([0.0, 0.0, 1.0], device=dev)
    return torch.nn.functional.normalize(n, dim=-1)
