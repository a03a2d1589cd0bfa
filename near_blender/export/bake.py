"""Baking a NeAR asset's PBR attributes (base colour, roughness, metallic) into textures of a mesh
with UVs (bpy-free; Blender unwraps the mesh and builds the material, ``operators/bake_pbr.py``).

1. **Texels to surface points** (:func:`uv_texels`): every triangle is rasterized in UV space; a
   texel whose centre ``((i + 0.5) / S, (j + 0.5) / S)`` lies in a triangle gets the 3D point of its
   barycentric coordinates on that triangle (world frame, metres). Rows run along v from 0
   (row 0 at the bottom, Blender's pixel order), columns along u.
2. **Points to attributes** (:func:`sample_attributes`): the asset's Gaussians as the base pass draws
   them (:func:`~near_blender.export.splats.drawn_gaussians`: world frame, base scales) are binned
   in a grid of one voxel; each point averages the attributes of the Gaussians of the 27 cells
   around it, weighted by their density at the point, ``max(opacity, 0) exp(-m^2 / 2)`` with ``m``
   the Mahalanobis distance under the Gaussian's covariance, its axes widened to at least half a
   voxel (a thin surfel still reaches the mesh surface, which lies up to a voxel from the voxel
   shell's Gaussians). This is the base pass's per-Gaussian blend without the ray: where the base
   pass composites the Gaussians along a camera ray, the bake averages them around a surface point.
3. **Gaps and gutters** (:func:`dilate`): texels no Gaussian reaches, and ``GUTTER`` texels around
   every UV island, take the mean of their filled neighbours, repeatedly, so that texture filtering
   and mip-maps do not pull in the empty background.

No normal map: the NeAR normals come from the 64³ voxel shell, coarser than the mesh's own, so a
baked normal map would only blur the mesh's shading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import NearError
from ..render.camera import Camera
from ..utils.progress import CancelCheck, Progress, as_reporter

GUTTER = 8  # texels of padding around every UV island
MAX_SIZE = 8192
REACH = 3  # the point's reach^3 nearest cells (2: 3.4x faster, misses Gaussians a voxel away)
CHUNK = 262144  # candidate Gaussians per batch of the attribute sampling (points x 8 cells x cap)


@dataclass(frozen=True)
class PBRTextures:
    """Baked textures ``[S, S, ...]`` (row 0 at v = 0, Blender's pixel order), float32 in [0, 1]:
    ``base_color`` [S, S, 3] linear; ``roughness``, ``metallic`` [S, S]; ``covered`` [S, S] bool
    (texels inside a UV triangle); ``stats``: counts and seconds."""

    base_color: np.ndarray
    roughness: np.ndarray
    metallic: np.ndarray
    covered: np.ndarray
    stats: dict[str, Any]


def uv_texels(
    uv_tris: np.ndarray, pos_tris: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows [T], cols [T], points [T, 3])`` of the texels whose centres lie in a triangle of
    ``uv_tris [F, 3, 2]`` (UVs in [0, 1]), with their points on ``pos_tris [F, 3, 3]``. A texel that
    two triangles cover (overlapping UVs) keeps the first."""
    uv = np.asarray(uv_tris, np.float64) * size - 0.5  # texel-centre coordinates: centre (i, j) at (i, j)
    pos = np.asarray(pos_tris, np.float64)
    lo = np.clip(np.ceil(uv.min(axis=1) - 1e-9), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(uv.max(axis=1) + 1e-9), 0, size - 1).astype(np.int64)
    w, h = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = w * h
    (a, b, c) = uv[:, 0], uv[:, 1], uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ok = np.abs(area) > 1e-12
    rows, cols, points, seen = [], [], [], np.zeros(size * size, bool)
    order = np.nonzero(ok & (counts > 0))[0]  # in batches of about 4 CHUNK candidate texels
    cum = np.cumsum(counts[order])
    first = 0
    while first < len(order):
        last = int(np.searchsorted(cum, cum[first] - counts[order[first]] + 4 * CHUNK, side="right"))
        last = max(last, first + 1)
        tri = order[first:last]
        n = counts[tri]
        t = np.repeat(tri, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        i = lo[t, 0] + local % w[t]
        j = lo[t, 1] + local // w[t]
        # barycentric coordinates of the texel centre (i, j)
        pa = np.stack([i - a[t, 0], j - a[t, 1]], -1)
        e1, e2 = b[t] - a[t], c[t] - a[t]
        inv = 1.0 / area[t]
        l1 = (pa[:, 0] * e2[:, 1] - pa[:, 1] * e2[:, 0]) * inv
        l2 = (e1[:, 0] * pa[:, 1] - e1[:, 1] * pa[:, 0]) * inv
        l0 = 1.0 - l1 - l2
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        key = j * size + i
        inside &= ~seen[key]
        key, t, l0, l1, l2 = key[inside], t[inside], l0[inside], l1[inside], l2[inside]
        key, idx = np.unique(key, return_index=True)  # one triangle per texel
        seen[key] = True
        bary = np.stack([l0[idx], l1[idx], l2[idx]], -1)
        points.append(np.einsum("tk,tkd->td", bary, pos[t[idx]]))
        rows.append(key // size)
        cols.append(key % size)
        first = last
    if not points:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(points)


def sample_attributes(
    points: np.ndarray,
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    values: np.ndarray,
    cell: float,
    cancel: CancelCheck | None = None,
    reach: int = REACH,
) -> tuple[np.ndarray, np.ndarray]:
    """``(values [T, C], found [T] bool)``: at every point ``[T, 3]`` the density-weighted mean of the
    Gaussians' ``values [M, C]`` in the ``reach``³ grid cells (edge ``cell``, world units) nearest
    to it: every Gaussian within ``(reach - 1) / 2`` cells, none beyond ``(reach + 1) / 2`` (see the module docstring;
    scales floored at ``cell / 2``). ``found`` is False where no Gaussian reaches the point (weight
    sum below 1e-6); its values are then 0. Torch, float32, in chunks of ``CHUNK`` points."""
    import torch

    from ..render.quaternion import quat_to_rotmat
    from ..utils.progress import Cancelled

    P = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    mu = torch.as_tensor(np.asarray(means), dtype=torch.float32)
    C = values.shape[1]
    out = torch.zeros(len(P), C)
    found = torch.zeros(len(P), dtype=torch.bool)
    if len(P) == 0 or len(mu) == 0:
        return out.numpy(), found.numpy()
    origin = mu.min(dim=0).values - 2 * cell
    cells_g = torch.floor((mu - origin) / cell).long()
    dims = cells_g.max(dim=0).values + 3

    def key(c: torch.Tensor) -> torch.Tensor:
        return (c[..., 0] * dims[1] + c[..., 1]) * dims[2] + c[..., 2]

    k_g = key(cells_g)
    k_sorted, order = torch.sort(k_g, stable=True)
    R = quat_to_rotmat(torch.as_tensor(np.asarray(quats), dtype=torch.float32), normalize=True)
    inv_s = 1.0 / torch.as_tensor(np.asarray(scales), dtype=torch.float32).clamp_min(cell / 2)
    A = (R.transpose(-1, -2) * inv_s[:, :, None])[order]  # d -> diag(1/s) R^T d: Mahalanobis axes
    op = torch.as_tensor(np.asarray(opacities), dtype=torch.float32).clamp_min(0.0)[order]
    vals = torch.as_tensor(np.asarray(values), dtype=torch.float32)[order]
    mu = mu[order]
    offsets = torch.stack(torch.meshgrid(*[torch.arange(reach)] * 3, indexing="ij"), -1).reshape(-1, 3)
    n_cells = reach**3
    table = torch.cat([mu, A.reshape(-1, 9), op[:, None], vals], 1)  # one gather per (point, Gaussian) pair
    step = CHUNK // 16
    for s in range(0, len(P), step):
        if cancel is not None and cancel():
            raise Cancelled("Cancelled by the user.")
        p = P[s : s + step]
        c = torch.floor((p - origin) / cell - (reach - 1) / 2).long()  # the lower corner of the block
        inside = ((c >= 0) & (c < dims - reach)).all(-1)
        kc = key(
            c.clamp(torch.zeros(3, dtype=torch.long), dims - reach)[:, None, :] + offsets[None]
        )  # [t, cells]
        lo = torch.searchsorted(k_sorted, kc).reshape(-1)
        n = (torch.searchsorted(k_sorted, kc, right=True).reshape(-1) - lo) * inside.repeat_interleave(
            n_cells
        )
        point = torch.arange(len(p)).repeat_interleave(n_cells).repeat_interleave(n)  # the pairs
        start = torch.cumsum(n, 0) - n
        gauss = lo.repeat_interleave(n) + torch.arange(int(n.sum())) - start.repeat_interleave(n)
        g = table[gauss]
        d = p[point] - g[:, :3]
        local = (g[:, 3:12].reshape(-1, 3, 3) * d[:, None, :]).sum(-1)
        w = g[:, 12] * torch.exp(-0.5 * (local * local).sum(-1))
        total = torch.zeros(len(p)).index_add_(0, point, w)
        acc = torch.zeros(len(p), C).index_add_(0, point, w[:, None] * g[:, 13:])
        ok = total > 1e-6
        out[s : s + len(p)] = torch.where(ok[:, None], acc / total.clamp_min(1e-30)[:, None], 0.0)
        found[s : s + len(p)] = ok
    return out.numpy(), found.numpy()


def dilate(image: np.ndarray, filled: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow the filled texels of ``image [S, S, C]`` (mask ``filled [S, S]``) by ``steps`` texels: each
    step gives every empty texel with filled 8-neighbours their mean."""
    img = image.astype(np.float64).copy()
    mask = filled.copy()
    for _ in range(steps):
        if mask.all():
            break
        acc = np.zeros_like(img)
        cnt = np.zeros(mask.shape)
        pad_i = np.pad(img * mask[..., None], ((1, 1), (1, 1), (0, 0)))
        pad_m = np.pad(mask.astype(np.float64), 1)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    sl = (slice(1 + dy, pad_m.shape[0] - 1 + dy), slice(1 + dx, pad_m.shape[1] - 1 + dx))
                    acc += pad_i[sl]
                    cnt += pad_m[sl]
        grow = ~mask & (cnt > 0)
        img[grow] = acc[grow] / cnt[grow][:, None]
        mask = mask | grow
    return img.astype(np.float32), mask


def bake_pbr(
    renderer: Any,
    asset: Any,
    uv_tris: np.ndarray,
    pos_tris: np.ndarray,
    size: int,
    camera: Camera,
    env: Any,
    precision: str = "fp32",
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> PBRTextures:
    """Bake ``asset``'s base colour, roughness and metallic into ``size``² textures of the mesh whose
    triangles have UVs ``uv_tris [F, 3, 2]`` and world positions ``pos_tris [F, 3, 3]``; the Gaussians
    are decoded for ``camera`` under ``env`` (the PBR attributes do not depend on them, their
    placement a little). See the module docstring."""
    from .splats import as_numpy, drawn_gaussians

    if not (isinstance(size, int) and 1 <= size <= MAX_SIZE):
        raise NearError(f"Texture size must be 1..{MAX_SIZE} texels, got {size!r}.")
    if len(uv_tris) == 0:
        raise NearError("The mesh has no faces to bake onto.")
    rep = as_reporter(progress, cancel)
    t0 = time.perf_counter()
    rep.update(0.0, "decoding the Gaussians")
    g, _ = drawn_gaussians(renderer, asset, camera, env, precision, rep.sub(0.0, 0.3))
    t1 = time.perf_counter()
    rep.update(0.3, "finding the texels on the surface")
    rows, cols, points = uv_texels(uv_tris, pos_tris, size)
    if len(points) == 0:
        raise NearError("No texel lies inside the mesh's UV triangles: unwrap it (or use a larger texture).")
    t2 = time.perf_counter()
    rep.update(0.4, f"sampling {len(points)} texels")
    from ..scene import similarity

    _, s, _, _ = similarity(asset.matrix_world)
    values = np.concatenate(
        [as_numpy(g.base_color), as_numpy(g.roughness)[:, None], as_numpy(g.metallic)[:, None]], 1
    )
    sampled, found = sample_attributes(
        points, as_numpy(g.means), as_numpy(g.quats), as_numpy(g.scales), as_numpy(g.opacities), values,
        cell=s / 64.0, cancel=rep.cancel,
    )  # fmt: skip
    t3 = time.perf_counter()
    rep.update(0.9, "filling gaps and gutters")
    image = np.zeros((size, size, 5), np.float32)
    covered = np.zeros((size, size), bool)
    covered[rows, cols] = True
    filled = np.zeros((size, size), bool)
    image[rows[found], cols[found]] = sampled[found]
    filled[rows[found], cols[found]] = True
    if not filled.any():
        raise NearError(
            "No Gaussian of the asset reaches the mesh's surface: is the mesh the asset's geometry prior?"
        )
    image, _ = dilate(image, filled, steps=max(GUTTER, int(np.ceil(size / 64))))
    image = np.clip(image, 0.0, 1.0)
    stats = {"texels": int(len(points)), "texels_reached": int(found.sum()), "gaussians": int(len(g)),
             "decode_s": t1 - t0, "texels_s": t2 - t1, "sample_s": t3 - t2, "total_s": time.perf_counter() - t0}  # fmt: skip
    rep.update(1.0, "done")
    return PBRTextures(image[..., :3], image[..., 3], image[..., 4], covered, stats)


__all__ = ["PBRTextures", "bake_pbr", "dilate", "sample_attributes", "uv_texels"]
