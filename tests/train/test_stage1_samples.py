"""Coupled stage-2 training inputs: stage-1 samples read back per asset and mixed with the ground
truth (``Stage2Config.stage1_samples``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from near_blender import NearError
from near_blender.train.stage1_samples import INFO, Stage1Samples, sample_path
from near_blender.train.stage2 import Stage2Config, Stage2Step
from near_blender.train.trainer import ItemRandom

COORDS = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])


class FakeDataset:
    """Two assets whose ground-truth SLAT features are all 0 (asset a) or all 1 (asset b)."""

    def slat_features(self, asset_id: str, with_bc: bool) -> tuple[np.ndarray, np.ndarray]:
        value = {"a": 0.0, "b": 1.0}[asset_id]
        return COORDS, np.full((3, 16 if with_bc else 8), value, np.float32)


def _write(folder, asset_id: str, index: int, coords: np.ndarray, feats: np.ndarray) -> None:
    p = sample_path(folder, asset_id, index)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, coords=coords.astype(np.int16), feats=feats.astype(np.float32))


@pytest.fixture
def samples(tmp_path):
    (tmp_path / INFO).write_text(json.dumps({"model": "m"}))
    feats = np.arange(48, dtype=np.float32).reshape(3, 16) + 10
    _write(tmp_path, "a", 0, COORDS, feats)
    _write(tmp_path, "a", 3, COORDS[[2, 0, 1]], feats[[2, 0, 1]] + 100)  # another order
    return tmp_path, feats


def test_samples_are_read_in_the_ground_truth_voxel_order(samples) -> None:
    folder, feats = samples
    s = Stage1Samples(folder)
    np.testing.assert_array_equal(s.read("a", 0.1, COORDS), feats)  # input0
    np.testing.assert_array_equal(s.read("a", 0.9, COORDS), feats + 100)  # input3, reordered
    assert s.read("b", 0.5, COORDS) is None  # no sample: the caller keeps the ground truth
    with pytest.raises(NearError, match="other voxels"):
        s.read("a", 0.1, COORDS + 1)
    with pytest.raises(NearError, match="stage1-samples"):
        Stage1Samples(folder / "nothing")


def _step(folder, prob: float) -> Stage2Step:
    cfg = Stage2Config(stage1_samples=str(folder), stage1_sample_prob=prob)
    norm = {"mean": [0.0] * 16, "std": [1.0] * 16}
    return Stage2Step(FakeDataset(), cfg, norm)  # type: ignore[arg-type]


def test_choose_slats_mixes_samples_with_the_ground_truth(samples) -> None:
    folder, feats = samples
    recs = [SimpleNamespace(asset_id="a"), SimpleNamespace(asset_id="b")]
    used = 0
    for step in range(40):
        rand = ItemRandom([1000 + 2 * step, 1001 + 2 * step])
        inp, gt, swapped = _step(folder, 0.5).choose_slats(recs, rand)  # type: ignore[arg-type]
        assert [float(f.max()) for _, f in gt] == [0.0, 1.0]  # the targets stay the ground truth
        assert float(inp[1][1].max()) == 1.0  # asset b has no samples
        a = inp[0][1]
        assert swapped == (float(a.max()) > 0)
        if swapped:
            used += 1
            assert np.array_equal(a, feats) or np.array_equal(a, feats + 100)
        # the same random streams give the same choice (exact resume)
        again = _step(folder, 0.5).choose_slats(recs, ItemRandom([1000 + 2 * step, 1001 + 2 * step]))  # type: ignore[arg-type]
        assert np.array_equal(again[0][0][1], a)
    assert 10 <= used <= 30  # about half of 40
    never = _step(folder, 0.0).choose_slats(recs, ItemRandom([1, 2]))  # type: ignore[arg-type]
    assert not never[2]
    bad = folder / "bad"
    (bad / INFO).parent.mkdir()
    (bad / INFO).write_text("{}")
    _write(bad, "a", 0, COORDS, np.zeros((3, 8)))
    with pytest.raises(NearError, match="8 channels"):
        _step(bad, 1.0).choose_slats(recs, ItemRandom([1, 2]))  # type: ignore[arg-type]


def test_samples_of_several_folders_are_read_as_one(samples, tmp_path_factory) -> None:
    """One folder per dataset of a union: an asset's samples are found in whichever holds them."""
    folder, feats = samples
    other = tmp_path_factory.mktemp("other-samples")
    (other / INFO).write_text(json.dumps({"model": "m"}))
    _write(other, "b", 1, COORDS, feats + 7)
    s = Stage1Samples([folder, other])
    np.testing.assert_array_equal(s.read("b", 0.5, COORDS), feats + 7)
    np.testing.assert_array_equal(s.read("a", 0.9, COORDS), feats + 100)
    assert [p.name for p in s.files("a")] == ["input0.npz", "input3.npz"]
    with pytest.raises(NearError, match="nothing"):
        Stage1Samples([folder, other / "nothing"])
