"""Large frames render in tiles written straight into Blender's result: the same image (issue 21, 2)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_engine_assets import _f12, _scene, tiny_model  # noqa: F401 - registers the add-on
from tests.test_viewport import _asset

pytestmark = pytest.mark.bpy

from near_addon.engine import session as S  # noqa: E402
from near_addon.engine import tiles  # noqa: E402


def test_tile_boxes_cover_the_image_once():
    boxes = tiles.tile_boxes(100, 70, tile=32)
    cover = np.zeros((70, 100), int)
    for x, y, w, h in boxes:
        cover[y : y + h, x : x + w] += 1
    assert (cover == 1).all() and len(boxes) == 4 * 3
    assert not tiles.needs_tiles(tiles.TILE, tiles.TILE) and tiles.needs_tiles(tiles.TILE + 1, 10)


def test_a_tiled_f12_equals_the_whole_frame(tmp_path, monkeypatch):
    scene, _, _ = _scene(tmp_path)  # 64x48
    _asset(tmp_path)
    whole = _f12(scene, tmp_path / "whole.exr")
    monkeypatch.setattr(S, "needs_tiles", lambda w, h: tiles.needs_tiles(w, h, tile=32))
    monkeypatch.setattr(S, "tile_boxes", lambda w, h: tiles.tile_boxes(w, h, tile=32))  # a 2 x 2 assembly
    tiled = _f12(scene, tmp_path / "tiled.exr")
    assert whole.keys() == tiled.keys() and len(whole) > 10
    assert whole["ViewLayer.Alpha.A"].mean() > 0.02  # the asset is in the frame
    diffs = {name: float(np.abs(tiled[name] - whole[name]).max()) for name in whole}
    assert max(diffs.values()) < 5e-5, diffs  # float rounding (without the tiles' margin: ~1e-2)
