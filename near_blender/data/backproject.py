"""Per-voxel aggregation of per-view feature maps by back-projection with a depth test.

For every view, the voxel centres are projected with the stack camera (OpenCV convention); a voxel
is *visible* in a view when its centre lands on a covered pixel (alpha > 0.5) whose rendered
surface is not more than one voxel diagonal in front of the centre, measured along that surface's
normal (Normal pass), i.e. nothing else of the asset hides it. Measuring along the normal keeps
grazing surfaces visible (their surface point on the centre's ray lies outside the voxel) while a
real occluder, a separate surface in front, fails the test; the normal factor is capped at 4 so
that grazing occluders cannot hide behind it. Features are sampled bilinearly at the
projected position (alpha-weighted for maps of the image's size, which are premultiplied like the
render passes; coarser maps such as ViT patch grids are sampled as they are) and averaged over the
views that see the voxel. Voxels that no view sees (deep cavities) fall back to the
average over all views they project into, which is what TRELLIS does for every voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..render.camera import Camera
from .voxelize import GRID, voxel_centres


@dataclass
class Aggregate:
    """Running per-voxel statistics over views (``N`` voxels, ``C`` feature channels)."""

    sum: np.ndarray  # [N, C] over views that see the voxel
    sumsq: np.ndarray  # [N, C]
    count: np.ndarray  # [N] views that see the voxel
    sum_any: np.ndarray  # [N, C] over views the voxel projects into (no depth test)
    count_any: np.ndarray  # [N]
    n_views: int = 0

    @classmethod
    def empty(cls, n: int, c: int) -> Aggregate:
        z = np.zeros((n, c))
        return cls(z.copy(), z.copy(), np.zeros(n), z.copy(), np.zeros(n))

    def mean(self) -> np.ndarray:
        """[N, C]: mean over seeing views, else over all views, else 0."""
        seen = self.count > 0
        out = np.zeros_like(self.sum)
        out[seen] = self.sum[seen] / self.count[seen, None]
        fall = ~seen & (self.count_any > 0)
        out[fall] = self.sum_any[fall] / self.count_any[fall, None]
        return out

    def std(self) -> np.ndarray:
        """[N, C]: standard deviation over the seeing views (0 where fewer than 2)."""
        c = np.maximum(self.count, 1)[:, None]
        var = self.sumsq / c - (self.sum / c) ** 2
        return np.where(self.count[:, None] > 1, np.sqrt(np.maximum(var, 0.0)), 0.0)


def visibility(
    camera: Camera,
    points: np.ndarray,
    depth: np.ndarray,
    alpha: np.ndarray,
    tol: float,
    normal: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visible [N], in_frame [N], uv [N, 2]) of world points in one rendered view.

    ``depth`` [H, W] is distance along the optical axis (0 = nothing), ``normal`` [H, W, 3] the
    world normals (optional: without them ``tol`` is applied along the optical axis).
    """
    uv, z = camera.project(points)
    H, W = depth.shape
    with np.errstate(invalid="ignore"):
        in_frame = (z > camera.near) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    px = np.clip(np.nan_to_num(uv[:, 0]).astype(np.int64), 0, W - 1)
    py = np.clip(np.nan_to_num(uv[:, 1]).astype(np.int64), 0, H - 1)
    d = depth[py, px]
    a = alpha[py, px]
    allow = np.full(len(z), float(tol))
    if normal is not None:
        ray = points - camera.position
        ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12)
        n = normal[py, px]
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        cos_n = np.clip(np.abs(np.einsum("nc,nc->n", n, ray)), 0.25, 1.0)
        allow = tol * (ray @ camera.forward) / cos_n  # depth units
    visible = in_frame & (a > 0.5) & (d > 0) & (z <= d + allow + 2e-3 * np.abs(z))
    return visible, in_frame, uv


def sample_bilinear(fmap: np.ndarray, uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sample ``fmap`` [h, w, C] at image pixel positions ``uv`` [N, 2] of a ``width`` x ``height``
    image (continuous, pixel centres at +0.5); the map covers the same image extent."""
    h, w = fmap.shape[:2]
    x = np.clip(uv[:, 0] * (w / width) - 0.5, 0.0, w - 1.0)
    y = np.clip(uv[:, 1] * (h / height) - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = fmap[y0, x0] * (1 - fx) + fmap[y0, x1] * fx
    bot = fmap[y1, x0] * (1 - fx) + fmap[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def accumulate(
    agg: Aggregate,
    coords: np.ndarray,
    camera: Camera,
    fmap: np.ndarray,
    depth: np.ndarray,
    alpha: np.ndarray,
    normal: np.ndarray | None = None,
    resolution: int = GRID,
) -> np.ndarray:
    """Add one view to ``agg``; returns the visibility mask [N] of this view."""
    pts = voxel_centres(coords, resolution)
    tol = math.sqrt(3.0) / resolution
    visible, in_frame, uv = visibility(camera, pts, depth, alpha, tol, normal)
    uv = np.nan_to_num(uv)
    fmap = np.asarray(fmap, dtype=np.float64)
    f = sample_bilinear(fmap, uv, camera.width, camera.height)
    if fmap.shape[:2] == alpha.shape:  # premultiplied map: alpha-weighted interpolation
        a = sample_bilinear(np.asarray(alpha, dtype=np.float64)[..., None], uv, camera.width, camera.height)
        f = f / np.maximum(a, 1e-6)
    agg.sum[visible] += f[visible]
    agg.sumsq[visible] += f[visible] ** 2
    agg.count[visible] += 1
    agg.sum_any[in_frame] += f[in_frame]
    agg.count_any[in_frame] += 1
    agg.n_views += 1
    return visible
