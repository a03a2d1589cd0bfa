"""EXR IO through OpenEXR: round trips, multilayer names, atomic writes, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from near_blender import NearError
from near_blender.render import exr


def test_rgba_round_trip_float32(tmp_path, rng):
    img = (rng.random((6, 10, 4)) * 100).astype(np.float32)
    exr.write_exr(tmp_path / "a.exr", img, half=False)
    back = exr.read_exr(tmp_path / "a.exr")
    np.testing.assert_array_equal(back, img)


def test_half_round_trip_and_layers(tmp_path, rng):
    rgb = rng.random((4, 8, 3)).astype(np.float32)
    z = rng.random((4, 8)).astype(np.float32) * 5
    exr.write_exr(tmp_path / "m.exr", {"ViewLayer.Combined": rgb, "ViewLayer.Depth.Z": z})
    ch = exr.read_exr_channels(tmp_path / "m.exr")
    assert {"ViewLayer.Combined.R", "ViewLayer.Combined.B", "ViewLayer.Depth.Z"} <= set(ch)
    np.testing.assert_allclose(exr.read_exr(tmp_path / "m.exr", "ViewLayer.Combined"), rgb, atol=1e-3)
    np.testing.assert_allclose(ch["ViewLayer.Depth.Z"], z, rtol=1e-3)


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "keep.exr"
    exr.write_exr(target, np.ones((2, 4, 3), np.float32))
    before = target.read_bytes()
    with pytest.raises(NearError):
        exr.write_exr(target, {"R": np.ones((2, 4)), "G": np.ones((3, 4))})
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.exr"]


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.exr"
    bad.write_bytes(b"not an exr at all")
    with pytest.raises(NearError, match="Cannot read"):
        exr.read_exr(bad)
    with pytest.raises(NearError, match="not found"):
        exr.read_exr(tmp_path / "nope.exr")


def test_read_envmap_validates(tmp_path):
    exr.write_exr(tmp_path / "sq.exr", np.ones((8, 8, 3), np.float32))
    with pytest.raises(NearError, match="twice as wide"):
        exr.read_envmap(tmp_path / "sq.exr")
    img = np.ones((8, 16, 3), np.float32)
    img[0, 0, 0] = np.inf
    exr.write_exr(tmp_path / "inf.exr", img, half=False)
    with pytest.raises(NearError, match="Inf"):
        exr.read_envmap(tmp_path / "inf.exr")
    exr.write_exr(tmp_path / "ok.exr", np.full((8, 16, 3), 2.0, np.float32))
    env = exr.read_envmap(tmp_path / "ok.exr", strength=1.5)
    np.testing.assert_allclose(env.radiance, 3.0)


def test_multipart_files_as_blender_5_writes_them(tmp_path):
    import OpenEXR

    rgb = np.ones((4, 6), np.float32)
    z = np.full((4, 6), 3.0, np.float32)
    parts = [
        OpenEXR.Part(
            {"name": "ViewLayer.Combined"}, {f"ViewLayer.Combined.{c}": rgb * i for i, c in enumerate("RGB")}
        ),
        OpenEXR.Part({"name": "ViewLayer.Depth"}, {"ViewLayer.Depth.Z": z}),
    ]
    with OpenEXR.File(parts) as f:
        f.write(str(tmp_path / "mp.exr"))
    ch = exr.read_exr_channels(tmp_path / "mp.exr")
    assert set(ch) == {
        "ViewLayer.Combined.R",
        "ViewLayer.Combined.G",
        "ViewLayer.Combined.B",
        "ViewLayer.Depth.Z",
    }
    np.testing.assert_array_equal(ch["ViewLayer.Depth.Z"], z)
    np.testing.assert_array_equal(exr.read_exr(tmp_path / "mp.exr", "ViewLayer.Combined")[..., 2], rgb * 2)
