"""SLAT .npz files in the authors' format."""

from __future__ import annotations

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.slat_io import load_slat_npz, save_slat_npz


def test_round_trip_uses_the_authors_dtypes(tmp_path, rng) -> None:  # noqa: ANN001
    coords = np.unique(rng.integers(0, 64, (500, 3)), axis=0)
    feats = rng.standard_normal((coords.shape[0], 8))
    path = save_slat_npz(tmp_path / "asset.npz", coords, feats)
    with np.load(path) as raw:
        assert raw["coords"].dtype == np.uint8 and raw["feats"].dtype == np.float32
    c, f = load_slat_npz(path)
    assert c.dtype == np.int32 and f.dtype == np.float32
    np.testing.assert_array_equal(c, coords)
    np.testing.assert_allclose(f, feats.astype(np.float32))


def test_invalid_inputs_and_corrupt_files(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(NearError, match=r"\[0, 64\)"):
        save_slat_npz(tmp_path / "a.npz", np.array([[0, 0, 64]]), np.zeros((1, 8)))
    with pytest.raises(NearError, match="NaN"):
        save_slat_npz(tmp_path / "a.npz", np.array([[0, 0, 1]]), np.full((1, 8), np.nan))
    with pytest.raises(NearError, match=r"\[N, C\]"):
        save_slat_npz(tmp_path / "a.npz", np.array([[0, 0, 1]]), np.zeros((2, 8)))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(NearError, match="not a readable LH-SLAT.*damaged.*Re-import") as err:
        load_slat_npz(tmp_path / "bad.npz")
    assert "pickle" not in str(err.value)  # numpy's wording for a non-zip file does not reach the user
    np.savez(tmp_path / "nokeys.npz", x=np.zeros(3))
    with pytest.raises(NearError, match=r"lacks \['coords', 'feats'\]"):
        load_slat_npz(tmp_path / "nokeys.npz")
    np.savez(tmp_path / "dup.npz", coords=np.zeros((2, 3), np.uint8), feats=np.zeros((2, 8), np.float32))
    with pytest.raises(NearError, match="duplicate"):
        load_slat_npz(tmp_path / "dup.npz")
    with pytest.raises(NearError, match="does not exist"):
        load_slat_npz(tmp_path / "none.npz")
