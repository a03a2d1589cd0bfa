"""Large frames in tiles: F12 renders a frame of more than :data:`TILE` ² pixels tile by tile.

The networks run once for the whole frame (one camera pose); each tile is rasterized with the
camera cropped to it and written straight into Blender's render result, so NeAR's own memory stays
that of one tile whatever the frame size (rasterization and compositing are per pixel, so the tiles
give the same image, each rendered with a :data:`MARGIN` around it). Tiles are listed top-down, left to right; Blender counts rows from the bottom.
"""

from __future__ import annotations

TILE = 1024  # pixels per side (a tile of 1152² with its margin: a few hundred MB of working memory)
# Each tile is rendered with this many extra pixels on every side and cut out of that: the splat
# projection (ours and gsplat's) clamps the Jacobian of Gaussians far outside the image it renders,
# so without a margin the Gaussians just outside a tile would be shaped slightly differently.
MARGIN = 64


def tile_boxes(width: int, height: int, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, w, h)`` of the tiles covering a ``width`` x ``height`` image (top row first)."""
    return [(x, y, min(tile, width - x), min(tile, height - y))
            for y in range(0, height, tile) for x in range(0, width, tile)]  # fmt: skip


def needs_tiles(width: int, height: int, tile: int = TILE) -> bool:
    return width > tile or height > tile


def padded(box: tuple[int, int, int, int], margin: int = MARGIN) -> tuple[int, int, int, int]:
    """The box grown by ``margin`` pixels on every side (it may reach outside the image)."""
    x, y, w, h = box
    return x - margin, y - margin, w + 2 * margin, h + 2 * margin
