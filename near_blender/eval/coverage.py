"""Resolution independence of a stage-2 render: its alpha coverage against the voxel prior's silhouette.

The decoder places K Gaussians in every occupied voxel of a ``resolution^3`` grid (object space
[-0.5, 0.5]^3, voxel ``c`` = the cube of side ``1 / resolution`` centred at ``(c + 0.5) / resolution
- 0.5``). A render that covers its surface has, at any output size, about as much alpha as the
union of those cubes covers the image; a model whose Gaussians shrink to points draws a lattice of
dots whose coverage falls as the image grows.

* :func:`voxel_silhouette` is the exact silhouette of the voxel cubes, independent of the Gaussian
  rasterizer: every exposed, camera-facing cube face is projected (a convex quad) and tested
  against pixel-centre samples of a ``supersample``-times finer grid, then box-averaged, so each
  pixel holds the fraction of its area the voxels cover (in [0, 1]).
* :func:`coverage_stats` compares a render's alpha with it: ``coverage = mean(alpha)`` (fraction of
  the image), ``silhouette = mean(silhouette)``, their ``ratio``, the mean alpha of the pixels fully
  inside the silhouette (``interior``: holes show here) and the alpha mass outside it (``outside``).
* :func:`measure_coverage` renders an LH-SLAT with a :class:`~near_blender.pipeline.NearPipeline` in
  several views at several sizes of each view's camera and returns one row per (view, size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import NearError
from ..render.camera import Camera

# the shipped default model's representation options (``SLatGaussianRenderer.update_representation``),
# measured by ``near bench coverage`` (issue 16): a scale floor of 0.6 voxel drawn with a 0.1 px²
# pixel filter keeps its coverage within 5% of the object's own silhouette at 64², 256² and 512²
# with edges about as sharp as a Cycles render's at 64²
COVERAGE_OPTIONS: dict[str, Any] = {
    "min_scale": 0.6, "min_scale_axes": 3, "min_scale_mode": "footprint", "pixel_filter": 0.1,
}  # fmt: skip
# the options of the model shipped before (a 0.9-voxel floor under gsplat's 0.3 px² filter)
PREVIOUS_OPTIONS: dict[str, Any] = {
    "min_scale": 0.9, "min_scale_axes": 3, "min_scale_mode": "footprint", "pixel_filter": 0.3,
}  # fmt: skip

# the six face directions (axis, sign) of a voxel cube
_FACES = [(a, s) for a in range(3) for s in (-1, 1)]


def exposed_faces(coords: np.ndarray, resolution: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The cube faces of the voxels ``coords [N, 3]`` (int, in [0, resolution)) with no occupied
    neighbour behind them: ``(corners [F, 4, 3]`` object space, in order around the face,
    ``normals [F, 3]`` outward unit)."""
    c = np.asarray(coords).astype(np.int64).reshape(-1, 3)
    if c.size and (c.min() < 0 or c.max() >= resolution):
        raise NearError(f"Voxel coords must lie in [0, {resolution}), got [{c.min()}, {c.max()}].")
    occ = np.zeros((resolution + 2,) * 3, dtype=bool)
    occ[c[:, 0] + 1, c[:, 1] + 1, c[:, 2] + 1] = True
    h = 0.5 / resolution
    centres = (c + 0.5) / resolution - 0.5
    corners, normals = [], []
    for axis, sign in _FACES:
        nb = c + 1
        nb[:, axis] += sign
        free = ~occ[nb[:, 0], nb[:, 1], nb[:, 2]]
        u, v = [a for a in range(3) if a != axis]
        n = np.zeros(3)
        n[axis] = sign
        quad = np.zeros((4, 3))
        quad[:, axis] = sign * h
        quad[:, u] = [-h, h, h, -h]
        quad[:, v] = [-h, -h, h, h]
        corners.append(centres[free][:, None, :] + quad[None])
        normals.append(np.broadcast_to(n, (int(free.sum()), 3)))
    return np.concatenate(corners), np.concatenate(normals)


def voxel_silhouette(
    coords: np.ndarray, camera: Camera, resolution: int = 64, supersample: int = 4
) -> np.ndarray:
    """Fraction of every pixel covered by the voxel cubes of ``coords [N, 3]`` seen by ``camera``
    (object space = world space): ``[H, W]`` float32 in [0, 1]. Exact up to the sampling: each
    pixel is tested at ``supersample^2`` stratified points (``supersample = 1``: the pixel centre,
    the rasterizer's own sampling). The object must lie in front of the camera."""
    if supersample < 1:
        raise NearError(f"supersample must be >= 1, got {supersample}.")
    W, H, s = camera.width * supersample, camera.height * supersample, supersample
    corners, normals = exposed_faces(coords, resolution)
    centre = corners.mean(axis=1)
    if camera.model == "pinhole":
        to_cam = camera.position[None, :] - centre
    else:
        to_cam = np.broadcast_to(-camera.forward, centre.shape)
    front = (normals * to_cam).sum(-1) > 0
    corners = corners[front]
    uv, z = camera.project(corners.reshape(-1, 3))
    if z.size and z.min() <= 0:
        raise NearError("voxel_silhouette needs the whole object in front of the camera.")
    q = uv.reshape(-1, 4, 2) * s  # the fine grid's pixel coords (centres at +0.5)
    # orient every quad counter-clockwise in (u, v): edge functions are then >= 0 inside
    area = sum(q[:, k, 0] * q[:, (k + 1) % 4, 1] - q[:, (k + 1) % 4, 0] * q[:, k, 1] for k in range(4))
    q = np.where((area < 0)[:, None, None], q[:, ::-1], q)
    q = q[np.abs(area) > 1e-12]
    lo = np.floor(q.min(axis=1) - 0.5).astype(np.int64) + 1  # first sample column/row >= the quad
    hi = np.floor(q.max(axis=1) - 0.5).astype(np.int64)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, [W - 1, H - 1])
    keep = (hi >= lo).all(axis=1)
    q, lo, hi = q[keep], lo[keep], hi[keep]
    mask = np.zeros(H * W, dtype=bool)
    if len(q):
        span = (hi - lo).max(axis=0) + 1
        e0 = q[:, [1, 2, 3, 0]] - q  # edge vectors [F, 4, 2]
        for dy in range(int(span[1])):
            for dx in range(int(span[0])):
                px, py = lo[:, 0] + dx, lo[:, 1] + dy
                ok = (px <= hi[:, 0]) & (py <= hi[:, 1])
                p = np.stack([px + 0.5, py + 0.5], -1)[:, None, :]
                e = e0[:, :, 0] * (p[..., 1] - q[..., 1]) - e0[:, :, 1] * (p[..., 0] - q[..., 0])
                inside = ok & (e >= 0).all(axis=1)
                mask[py[inside] * W + px[inside]] = True
    fine = mask.reshape(H, W).astype(np.float32)
    return fine.reshape(camera.height, s, camera.width, s).mean(axis=(1, 3))


def coverage_stats(alpha: np.ndarray, silhouette: np.ndarray) -> dict[str, float]:
    """Compare a render's ``alpha [H, W]`` (or ``[H, W, 1]``) with a ``silhouette [H, W]`` (pixel
    area fractions, :func:`voxel_silhouette`): ``coverage`` mean alpha, ``silhouette`` mean area,
    ``ratio`` coverage / silhouette, ``interior`` mean alpha of the pixels fully inside,
    ``outside`` alpha outside the silhouette as a fraction of the image."""
    a = np.asarray(alpha, np.float64).reshape(silhouette.shape)
    sil = np.asarray(silhouette, np.float64)
    inner = sil >= 1.0
    cov, area = float(a.mean()), float(sil.mean())
    return {
        "coverage": cov,
        "silhouette": area,
        "ratio": cov / area if area > 0 else float("nan"),
        "interior": float(a[inner].mean()) if inner.any() else float("nan"),
        "outside": float((a * (sil <= 0.0)).mean()),
    }


@dataclass(frozen=True)
class CoverageView:
    """One view to measure: ``camera`` (its intrinsics at ``camera.width x camera.height``; other
    sizes scale them), ``env`` the :class:`~near_blender.render.envmap.Environment` it is lit by,
    and optionally ``rgba [H, W, 4]`` (premultiplied HDR ground truth at the camera's size) for the
    PSNR at that size."""

    camera: Camera
    env: Any
    rgba: np.ndarray | None = None


def display_psnr(hdr: np.ndarray, alpha: np.ndarray, rgba: np.ndarray) -> float:
    """PSNR (dB) of a render ``hdr [H, W, 3]``, ``alpha [H, W, 1]`` against ``rgba [H, W, 4]``, as
    ``tests/test_default_model.py`` scores the default model: AgX of the premultiplied colour
    times alpha, over black."""
    from ..render.tonemap import tonemap_numpy
    from ..train.metrics import psnr

    pred = tonemap_numpy(hdr) * alpha
    gt = tonemap_numpy(rgba[..., :3]) * rgba[..., 3:4]
    return psnr(pred, gt)


def measure_coverage(
    pipe: Any,
    coords: np.ndarray,
    feats: np.ndarray,
    views: Sequence[CoverageView],
    sizes: Sequence[int] = (64, 256, 512),
    supersample_pixels: int = 1024,
) -> list[dict[str, Any]]:
    """Render the LH-SLAT ``coords [N, 3]``, ``feats [N, C]`` with ``pipe``'s stage 2 (a
    :class:`~near_blender.pipeline.NearPipeline`; its renderer's current representation options)
    in every view at every square ``size x size`` of ``sizes`` (the view's camera resized: its
    intrinsics scale with the size), and compare each alpha with the voxel silhouette (sampled on
    a grid of about ``supersample_pixels`` across).

    The asset is encoded once, and each view's Gaussians decoded once for all sizes (the decoder
    does not see the image size). One row per (view, size): ``view`` (index), ``size``, ``seconds``
    (the rasterization at that size), the :func:`coverage_stats` and, at the size of the view's
    ``rgba``, ``psnr`` (:func:`display_psnr`). With an ``rgba``, also ``object``: the mean of its
    alpha, the mesh's own silhouette as a fraction of the frame (the same fraction at any size of
    a camera whose field of view is kept), and ``object_ratio`` = coverage / object.
    """
    import time

    import torch

    model = pipe.stage2()
    resolution = int(model.renderer.resolution)
    device = pipe.device
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        asset = model.encode_asset(pipe.stage2_inputs(coords, feats))
        for v, view in enumerate(views):
            vm = torch.as_tensor(np.asarray(view.camera.viewmat)[None], dtype=torch.float32, device=device)
            lighting = model.encode_lighting(pipe.conditioning(view.env)(view.camera.viewmat).stacked()[None])
            g = model.gaussians(asset, lighting, vm)
            g.radiance = model.radiance(g, lighting, vm)
            for size in sizes:
                cam = view.camera.resized(size, size)
                K = torch.as_tensor(cam.K[None], dtype=torch.float32, device=device)
                t0 = time.perf_counter()
                out = model.render_gaussians(g, vm, K, size, size, cam.model, ("light",))
                seconds = time.perf_counter() - t0
                alpha = out["alpha"][0].float().cpu().numpy()
                sil = voxel_silhouette(coords, cam, resolution, max(1, supersample_pixels // size))
                row: dict[str, Any] = {"view": v, "size": int(size), "seconds": seconds}
                row.update(coverage_stats(alpha[..., 0], sil))
                if view.rgba is not None:  # the object's own silhouette, as a fraction of the frame
                    row["object"] = float(np.mean(view.rgba[..., 3]))
                    row["object_ratio"] = (
                        row["coverage"] / row["object"] if row["object"] > 0 else float("nan")
                    )
                if view.rgba is not None and view.rgba.shape[:2] == (size, size):
                    hdr = out["hdr"][0].float().cpu().numpy()
                    row["psnr"] = display_psnr(hdr, alpha, view.rgba)
                rows.append(row)
    return rows
