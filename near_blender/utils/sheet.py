"""Contact sheets: a grid of equal square tiles under a strip of column headers (PIL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TEXT = (230, 230, 230)


def contact_sheet(
    tiles: Sequence[Sequence[Any | None]],
    cell: int,
    headers: Sequence[str],
    *,
    label_height: int = 14,
    header_y: int = 1,
    row_labels: Sequence[str] | None = None,
    label_width: int = 0,
    background: tuple[int, int, int] = (0, 0, 0),
    missing_grey: int | None = None,
) -> Any:
    """An RGB PIL image: ``headers`` over ``len(headers)`` columns of ``cell`` px, one row of
    ``cell`` px per entry of ``tiles`` (at least one row), ``row_labels`` in a left strip of
    ``label_width`` px. A tile is a PIL image of ``cell x cell`` px or None: left as background,
    or (``missing_grey`` given) a grey square marked "n/a"."""
    from PIL import Image, ImageDraw

    width = label_width + cell * len(headers)
    sheet = Image.new("RGB", (width, label_height + cell * max(len(tiles), 1)), background)
    draw = ImageDraw.Draw(sheet)
    for j, head in enumerate(headers):
        draw.text((label_width + j * cell + 3, header_y), head, fill=TEXT)
    for i, row in enumerate(tiles):
        y = label_height + i * cell
        if row_labels is not None:
            draw.text((3, y + cell // 2 - 6), row_labels[i], fill=TEXT)
        for j, tile in enumerate(row):
            x = label_width + j * cell
            if tile is not None:
                sheet.paste(tile, (x, y))
            elif missing_grey is not None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(missing_grey,) * 3)
                draw.text((x + 3, y + 3), "n/a", fill=(160, 160, 160))
    return sheet
