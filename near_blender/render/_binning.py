"""Tile binning: which Gaussians each block of pixels must look at, front to back (private).

gsplat assigns a Gaussian to every 16x16 tile that its extent box touches
(``floor((u - r) / 16) .. ceil((u + r) / 16)``, clamped to the image) and composites each tile's
list sorted by depth. We reproduce exactly that set, but evaluate it in smaller "blocks" of
``block x block`` pixels (block divides 16): a (Gaussian, block) pair is kept only when the block
lies in the Gaussian's 16-px tile box *and* some pixel centre of the block can reach alpha >= 1/255
(the minimum of the Gaussian's quadratic form over the block's rectangle of pixel centres). Pairs
dropped by the second test contribute nothing in gsplat either (every pixel would skip them), so
the result is identical while far fewer (pair, pixel) evaluations are made.

Pairs are ordered by (camera, block, depth); ties in depth keep the instance order (camera-major,
then Gaussian index), as gsplat's stable radix sort does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

GSPLAT_TILE = 16
# Margin (in units of the exponent) for the block culling test, so float rounding can never drop a
# pair that has a pixel with alpha just above 1/255.
_CULL_MARGIN = 1e-3


@dataclass(frozen=True)
class Grid:
    """Block layout of C images of ``width`` x ``height`` pixels."""

    width: int
    height: int
    cameras: int
    block: int

    @property
    def nbx(self) -> int:
        return math.ceil(self.width / self.block)

    @property
    def nby(self) -> int:
        return math.ceil(self.height / self.block)

    @property
    def blocks_per_camera(self) -> int:
        return self.nbx * self.nby

    @property
    def num_blocks(self) -> int:
        return self.cameras * self.blocks_per_camera

    @property
    def pixels_per_block(self) -> int:
        return self.block * self.block


@dataclass
class Bins:
    """Sorted (instance, block) pairs of one depth slab.

    Attributes:
        pair_inst: [P] int32 instance (depth rank) of each pair, sorted by (block, depth).
        block_ids: [B] int64 global ids (camera * blocks_per_camera + by * nbx + bx) of the
            non-empty blocks.
        start, count: [B] int64 offset and length of each block's run in ``pair_inst``.
    """

    pair_inst: Tensor
    block_ids: Tensor
    start: Tensor
    count: Tensor

    @property
    def num_pairs(self) -> int:
        return int(self.pair_inst.shape[0])


def block_ranges(
    means2d: Tensor, radii: Tensor, opacities: Tensor, grid: Grid
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidate block ranges [x0, x1) x [y0, y1) per instance (int32).

    Always inside gsplat's 16-px tile box. For opacity <= 1 the extent (``sqrt(2 ln(255 o))``
    sigmas, uncapped) bounds every pixel with alpha >= 1/255, so the range is further cut to the
    blocks that touch the extent box (padded by a pixel against rounding).
    """
    tw = math.ceil(grid.width / GSPLAT_TILE)
    th = math.ceil(grid.height / GSPLAT_TILE)
    f = GSPLAT_TILE // grid.block
    S = grid.block
    u, v = means2d[:, 0], means2d[:, 1]
    rx = radii[:, 0].to(means2d.dtype)
    ry = radii[:, 1].to(means2d.dtype)
    i32 = torch.int32
    x0 = torch.floor((u - rx) / GSPLAT_TILE).clamp(0, tw).to(i32) * f
    x1 = torch.ceil((u + rx) / GSPLAT_TILE).clamp(0, tw).to(i32) * f
    y0 = torch.floor((v - ry) / GSPLAT_TILE).clamp(0, th).to(i32) * f
    y1 = torch.ceil((v + ry) / GSPLAT_TILE).clamp(0, th).to(i32) * f
    tight = opacities <= 1.0
    ex0 = torch.floor((u - rx - 1.5) / S).clamp(0, grid.nbx).to(i32)
    ex1 = torch.floor((u + rx + 0.5) / S).clamp(-1, grid.nbx).to(i32) + 1
    ey0 = torch.floor((v - ry - 1.5) / S).clamp(0, grid.nby).to(i32)
    ey1 = torch.floor((v + ry + 0.5) / S).clamp(-1, grid.nby).to(i32) + 1
    x0 = torch.where(tight, torch.maximum(x0, ex0), x0)
    x1 = torch.where(tight, torch.minimum(x1, ex1), x1).clamp(max=grid.nbx)
    y0 = torch.where(tight, torch.maximum(y0, ey0), y0)
    y1 = torch.where(tight, torch.minimum(y1, ey1), y1).clamp(max=grid.nby)
    return x0, x1, y0, y1


def row_spans(
    mx: Tensor, my: Tensor, conics: Tensor, level: Tensor, by: Tensor, grid: Grid
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel x-range ``[xl, xr]`` where the ellipse ``power <= level`` meets the pixel-centre rows
    of block row ``by``, and whether it meets them at all. All per (instance, row) [R].

    With ``det = a c - b²`` and ``dy`` the offset from the centre, the ellipse spans
    ``dx = (-b dy ± sqrt(2 a level - det dy²)) / a``; over a band of rows the left end is a convex
    function of ``dy`` with its minimum at ``dy* = b sqrt(2 level / (det c))`` (the right end
    mirrors it), so each end is evaluated once at the clamped optimum.
    """
    S = grid.block
    a, b, c = conics.unbind(-1)
    det = a * c - b * b
    y0 = (by * S).to(mx.dtype) + 0.5 - my
    y1 = torch.clamp((by + 1) * S, max=grid.height).to(mx.dtype) - 0.5 - my
    ext = torch.sqrt(2.0 * level * a / det)  # half height of the ellipse
    lo, hi = torch.maximum(y0, -ext), torch.minimum(y1, ext)
    t = b * torch.sqrt(2.0 * level / (det * c))
    dl = torch.minimum(torch.maximum(t, lo), hi)
    dr = torch.minimum(torch.maximum(-t, lo), hi)
    xl = (-b * dl - torch.sqrt(torch.clamp(2.0 * a * level - det * dl * dl, min=0.0))) / a
    xr = (-b * dr + torch.sqrt(torch.clamp(2.0 * a * level - det * dr * dr, min=0.0))) / a
    return mx + xl, mx + xr, lo <= hi


def pair_counts(means2d: Tensor, radii: Tensor, opacities: Tensor, grid: Grid) -> Tensor:
    """[M] number of candidate blocks (before the ellipse test) per instance."""
    x0, x1, y0, y1 = block_ranges(means2d, radii, opacities, grid)
    return (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)


@torch.no_grad()
def bin_instances(r0: int, r1: int, table: Tensor, cam: Tensor, radii: Tensor, grid: Grid) -> Bins:
    """Bin the instances of depth ranks ``[r0, r1)`` into blocks.

    Instances are numbered by depth rank (front to back), so every per-instance array is ordered
    that way: ``table`` [M, 6] = (u, v, a, b, c, opacity), ``cam`` [M], ``radii`` [M, 2]. Candidate
    blocks come row by row: in each block row of an instance's box, only the blocks that its ellipse
    ``alpha >= 1/255`` reaches. Pair lists hold ranks (int32), so they are depth sorted for free.
    """
    dev = table.device
    S = grid.block
    i32 = torch.int32
    if grid.num_blocks >= 2**31 - 1 or r1 >= 2**31 - 1:  # pragma: no cover - absurd sizes
        raise ValueError("too many blocks or Gaussians for int32 bins")
    t = table[r0:r1]
    x0, x1, y0, y1 = block_ranges(t[:, :2], radii[r0:r1], t[:, 5], grid)
    ny = (y1 - y0).clamp(min=0).masked_fill_(x1 <= x0, 0)
    n_rows = int(ny.sum())
    if n_rows == 0:
        return _empty_bins(dev)
    # one entry per (instance, block row)
    owner = torch.repeat_interleave(torch.arange(r1 - r0, device=dev, dtype=i32), ny, output_size=n_rows)
    first = torch.cumsum(ny, 0, dtype=i32) - ny
    by = (y0 - first).index_select(0, owner) + torch.arange(n_rows, device=dev, dtype=i32)
    bx0 = x0.index_select(0, owner)
    bx1 = x1.index_select(0, owner)
    # rows of a box wider or taller than one block: keep only the blocks the ellipse reaches
    # (a one-block box is kept as is; it is almost always reached, and an unreached block only
    # costs evaluations that come out as alpha < 1/255)
    test = ((x1 - x0 > 1) | (ny > 1)).index_select(0, owner).nonzero().squeeze(1)
    if test.numel():
        level = torch.log(t[:, 5] * 255.0) + _CULL_MARGIN
        g = torch.cat([t[:, :5], level[:, None]], 1).index_select(0, owner.index_select(0, test))
        xl, xr, meets = row_spans(g[:, 0], g[:, 1], g[:, 2:5], g[:, 5], by.index_select(0, test), grid)
        del g
        # blocks whose pixel-centre columns [bx S + 0.5, bx S + S - 0.5] meet [xl, xr]
        lo = torch.ceil((xl + 0.5) / S - 1.0 - 1e-6).clamp_(-1, grid.nbx).to(i32)
        hi = torch.floor((xr - 0.5) / S + 1e-6).clamp_(-1, grid.nbx).to(i32) + 1
        lo = torch.maximum(lo, bx0.index_select(0, test))
        hi = torch.minimum(hi, bx1.index_select(0, test)).masked_fill_(~meets, -1)
        bx0.index_copy_(0, test, lo)
        bx1.index_copy_(0, test, hi)
    nx = (bx1 - bx0).clamp_(min=0)
    total = int(nx.sum())
    if total == 0:
        return _empty_bins(dev)
    row = torch.repeat_interleave(torch.arange(n_rows, device=dev, dtype=i32), nx, output_size=total)
    rfirst = torch.cumsum(nx, 0, dtype=i32) - nx
    # block id = camera offset + by * nbx + bx; bx runs bx0, bx0 + 1, ... within a row
    base = (cam[r0:r1].to(i32) * grid.blocks_per_camera).index_select(0, owner)
    base += by * grid.nbx + bx0 - rfirst
    block = base.index_select(0, row) + torch.arange(total, device=dev, dtype=i32)
    pinst = (owner + r0).index_select(0, row)
    del row, base
    block, order = torch.sort(block, stable=True)  # pairs were generated front to back
    pinst = pinst.index_select(0, order)
    block_ids, count = torch.unique_consecutive(block, return_counts=True)
    start = torch.cumsum(count, 0) - count
    return Bins(pinst, block_ids.to(torch.int64), start, count)


def _empty_bins(dev: torch.device) -> Bins:
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    return Bins(empty, empty, empty, empty)


@torch.no_grad()
def depth_slabs(counts: Tensor, budget: int) -> list[tuple[int, int]]:
    """Split instances (in depth order, with candidate pair ``counts``) into contiguous slabs of at
    most ``budget`` pairs each (a single instance larger than the budget gets its own slab)."""
    n = int(counts.shape[0])
    if n == 0:
        return []
    csum = torch.cumsum(counts, 0)
    if int(csum[-1]) <= budget:
        return [(0, n)]
    out = []
    i = 0
    base = 0
    while i < n:
        j = int(torch.searchsorted(csum, base + budget, right=True))
        j = max(j, i + 1)
        out.append((i, j))
        base = int(csum[j - 1])
        i = j
    return out
