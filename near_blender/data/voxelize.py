"""Surface voxelization of normalized meshes into the SLAT grid (64^3 over [-0.5, 0.5]^3).

A voxel is active when its closed box intersects a triangle of the mesh, tested exactly with the
separating-axis theorem (Akenine-Moeller's triangle/box test: the 3 box axes, the triangle normal
and the 9 edge-by-axis cross products). This is the rule of Open3D's
``VoxelGrid.create_from_triangle_mesh_within_bounds`` that TRELLIS uses; as TRELLIS does, vertices
are first clamped to just inside the cube. Voxel ``(i, j, k)`` spans
``[-0.5 + i / 64, -0.5 + (i + 1) / 64]`` along x (j: y, k: z); its centre is ``(i + 0.5) / 64 - 0.5``.
"""

from __future__ import annotations

import numpy as np

from .. import NearError

GRID = 64
_EPS = 1e-9
_MAX_PAIRS = 1 << 20  # triangle/voxel candidate pairs tested per chunk


NEIGHBOURS_26 = np.array(
    [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)]
)  # [26, 3] offsets of a voxel's face, edge and corner neighbours


class VoxelIndex:
    """Find voxels of a set ``coords [N, 3]`` (ints in [-1, 2046]) by their coordinates: one integer
    key per cell, sorted once, looked up by binary search."""

    def __init__(self, coords: np.ndarray) -> None:
        keys = self.keys(np.asarray(coords, np.int64))
        self.order = np.argsort(keys)
        self.sorted = keys[self.order]

    @staticmethod
    def keys(cells: np.ndarray) -> np.ndarray:
        """One integer per cell ``[..., 3]`` (x-major; cells just off a grid edge keep their own key)."""
        c = np.asarray(cells, np.int64) + 1
        return (c[..., 0] << 22) + (c[..., 1] << 11) + c[..., 2]

    def find(self, cells: np.ndarray) -> np.ndarray:
        """Index into ``coords`` of each cell ``[..., 3]``, -1 where the set has no such voxel."""
        if len(self.sorted) == 0:
            return np.full(np.shape(cells)[:-1], -1, np.int64)
        q = self.keys(cells)
        pos = np.clip(np.searchsorted(self.sorted, q), 0, len(self.sorted) - 1)
        return np.where(self.sorted[pos] == q, self.order[pos], -1)


def voxel_centres(coords: np.ndarray, resolution: int = GRID) -> np.ndarray:
    """World positions [N, 3] of the centres of voxels ``coords`` [N, 3]."""
    return (np.asarray(coords, dtype=np.float64) + 0.5) / resolution - 0.5


def canonical_transform(triangles: np.ndarray) -> np.ndarray:
    """The 4x4 similarity that maps ``triangles`` [F, 3, 3] (world units) into the canonical box:
    the bounding box centred at the origin, its largest side scaled to 1 (datagen's normalization).
    Its inverse places the canonical asset back onto the source geometry."""
    tris = np.asarray(triangles, dtype=np.float64)
    if tris.ndim != 3 or tris.shape[1:] != (3, 3) or len(tris) == 0:
        raise NearError(f"Need triangles of shape [F, 3, 3] with F > 0, got {tris.shape}.")
    if not np.all(np.isfinite(tris)):
        raise NearError("The mesh has NaN or infinite vertex positions; fix the geometry.")
    lo, hi = tris.reshape(-1, 3).min(axis=0), tris.reshape(-1, 3).max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 1e-9:
        raise NearError("The geometry has zero size (all vertices coincide).")
    s = 1.0 / extent
    M = np.eye(4)
    M[:3, :3] *= s
    M[:3, 3] = -s * (lo + hi) / 2.0
    return M


def voxelize_prior(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(voxel coords ``[N, 3]``, the asset's matrix_world ``[4, 4]``) of a geometry prior's
    world-space triangles ``[F, 3, 3]``: voxelized in their canonical box, which matrix_world maps
    back onto them."""
    M = canonical_transform(triangles)
    canon = np.asarray(triangles, np.float64) @ M[:3, :3].T + M[:3, 3]
    return voxelize_triangles(canon), np.linalg.inv(M)


def voxelize_triangles(triangles: np.ndarray, resolution: int = GRID) -> np.ndarray:
    """Unique voxels ``(N, 3) int64`` (sorted by x, y, z) touched by ``triangles`` ``[F, 3, 3]``.

    Triangles are in world units inside [-0.5, 0.5]^3 (normalized assets); anything outside is
    clamped onto the cube's boundary layer, as TRELLIS does.
    """
    tris = np.asarray(triangles, dtype=np.float64)
    if tris.ndim != 3 or tris.shape[1:] != (3, 3):
        raise NearError(f"voxelize_triangles needs triangles of shape [F, 3, 3], got {tris.shape}.")
    if len(tris) == 0:
        raise NearError("The mesh has no triangles to voxelize.")
    if not np.all(np.isfinite(tris)):
        raise NearError("The mesh has NaN or infinite vertex positions; fix the geometry.")
    g = (np.clip(tris, -0.5 + 1e-6, 0.5 - 1e-6) + 0.5) * resolution  # grid units: voxel i = [i, i + 1]
    lo = np.clip(np.floor(g.min(axis=1) - _EPS), 0, resolution - 1).astype(np.int64)
    hi = np.clip(np.floor(g.max(axis=1) + _EPS), 0, resolution - 1).astype(np.int64)
    ext = hi - lo + 1  # [F, 3]
    counts = ext.prod(axis=1)
    found: list[np.ndarray] = []
    start = 0
    cum = np.cumsum(counts)
    while start < len(tris):
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + _MAX_PAIRS, side="right"))
        stop = max(stop, start + 1)
        found.append(
            _test_chunk(g[start:stop], lo[start:stop], ext[start:stop], counts[start:stop], resolution)
        )
        start = stop
    keys = np.unique(np.concatenate(found))
    r2 = resolution * resolution
    return np.stack([keys // r2, (keys // resolution) % resolution, keys % resolution], axis=1)


def _test_chunk(g: np.ndarray, lo: np.ndarray, ext: np.ndarray, counts: np.ndarray, res: int) -> np.ndarray:
    """Linear voxel keys of the candidate voxels that the triangles of this chunk overlap."""
    tri_idx = np.repeat(np.arange(len(g)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    local = np.arange(len(tri_idx)) - first  # index inside each triangle's candidate box
    e = ext[tri_idx]
    ix = local // (e[:, 1] * e[:, 2])
    iy = (local // e[:, 2]) % e[:, 1]
    iz = local % e[:, 2]
    vox = lo[tri_idx] + np.stack([ix, iy, iz], axis=1)
    ok = triangle_box_overlap(g[tri_idx], vox + 0.5, 0.5)
    v = vox[ok]
    return (v[:, 0] * res + v[:, 1]) * res + v[:, 2]


def triangle_box_overlap(tri: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    """Exact overlap of triangles ``[M, 3, 3]`` with closed axis-aligned cubes (centres ``[M, 3]``,
    half size ``half``); boolean ``[M]``."""
    v = tri - centre[:, None, :]
    edges = (v[:, 1] - v[:, 0], v[:, 2] - v[:, 1], v[:, 0] - v[:, 2])
    ok = (v.min(axis=1) <= half + _EPS).all(axis=1) & (v.max(axis=1) >= -half - _EPS).all(axis=1)  # box axes
    for e in edges:
        for axis in range(3):
            a = np.zeros_like(e)  # a = e x unit(axis)
            j, k = (axis + 1) % 3, (axis + 2) % 3
            a[:, j] = e[:, k]
            a[:, k] = -e[:, j]
            p = np.einsum("mvc,mc->mv", v, a)
            r = half * np.abs(a).sum(axis=1)
            ok &= (p.min(axis=1) <= r + _EPS) & (p.max(axis=1) >= -r - _EPS)
    n = np.cross(edges[0], edges[1])
    d = np.einsum("mc,mc->m", n, v[:, 0])
    ok &= np.abs(d) <= half * np.abs(n).sum(axis=1) + _EPS
    return ok
