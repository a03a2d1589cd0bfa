"""Large frames render in tiles written straight into Blender's result: the same image (issue 21, 2)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_engine_assets import _f12, _scene
from tests.test_viewport import _asset

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

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


def test_passes_turned_off_are_not_written_and_the_rest_is_unchanged(tmp_path):
    """View Layer Properties > NeAR Passes: a pass turned off gets no buffer in Blender's result."""
    scene, _, _ = _scene(tmp_path)
    _asset(tmp_path)
    every = _f12(scene, tmp_path / "every.exr")
    settings = scene.view_layers[0].near_passes
    for name in ("depth", "base_color", "roughness", "metallic", "shadow", "normal"):
        setattr(settings, f"use_{name}", False)
    few = _f12(scene, tmp_path / "few.exr")
    assert sorted({k.split(".")[1] for k in few}) == ["Alpha", "Combined"]
    assert {k.split(".")[1] for k in every} >= {"Depth", "Base Color", "Normal", "Shadow"}
    for name in few:
        np.testing.assert_array_equal(few[name], every[name])


def test_a_frame_that_cannot_fit_is_refused_before_rendering(tmp_path, monkeypatch):
    """The estimate (Blender's float32 result for the enabled passes + one NeAR tile) against the
    free memory: refused with the settings that shrink it, nothing written."""
    from near_blender.render import memory

    assert memory.frame_bytes(8000, 8000, 15, 1152) == 8000 * 8000 * 15 * 4 + 1152**2 * 150  # 3.58 GiB + tile
    assert memory.frame_bytes(64, 48, 4, 1152) == 64 * 48 * (16 + 150)
    scene, _, _ = _scene(tmp_path)
    _asset(tmp_path)
    need = memory.frame_bytes(64, 48, 15, 1152)
    monkeypatch.setattr(memory, "available_bytes", lambda: need)  # 10 % short of the estimate's headroom
    with pytest.raises(RuntimeError, match=r"View Layer Properties > NeAR Passes"):
        _f12(scene, tmp_path / "refused.exr")
    assert not (tmp_path / "refused.exr").exists()
    settings = scene.view_layers[0].near_passes
    for name in ("depth", "base_color", "roughness", "metallic", "shadow", "normal"):
        setattr(settings, f"use_{name}", False)  # 5 channels instead of 15: fits
    assert "ViewLayer.Combined.R" in _f12(scene, tmp_path / "fits.exr")
