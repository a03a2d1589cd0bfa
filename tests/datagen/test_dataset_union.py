"""Several ``near datagen`` folders read as one training set (:class:`DatasetUnion`): the tiny
dataset cut into two one-asset folders must read back exactly as the whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.dataset import DatasetUnion, NearDataset, open_dataset

pytestmark = [pytest.mark.bpy, pytest.mark.slow]


def _one_asset_copy(src: Path, dst: Path, asset_id: str) -> Path:
    """``src`` with only ``asset_id``: its folder, the maps, the config and its manifest rows."""
    dst.mkdir()
    shutil.copytree(src / "assets" / asset_id, dst / "assets" / asset_id)
    shutil.copytree(src / "envmaps", dst / "envmaps")
    shutil.copy(src / "config.json", dst / "config.json")
    rows = [r for r in (src / "manifest.jsonl").read_text().splitlines() if r.strip()]
    keep = [r for r in rows if json.loads(r).get("id") == asset_id]
    (dst / "manifest.jsonl").write_text("\n".join(keep) + "\n")
    return dst


@pytest.fixture(scope="module")
def halves(tiny_dataset, tmp_path_factory):
    whole = NearDataset(tiny_dataset)
    a, b = whole.asset_ids
    base = tmp_path_factory.mktemp("union")
    return whole, _one_asset_copy(tiny_dataset, base / "a", a), _one_asset_copy(tiny_dataset, base / "b", b)


def test_two_halves_read_as_the_whole(halves) -> None:
    whole, a, b = halves
    union = open_dataset([str(b), str(a)])
    assert isinstance(union, DatasetUnion)
    assert union.asset_ids == whole.asset_ids
    assert union.split(0.2) == whole.split(0.2)
    assert union.holdout_envmaps == whole.holdout_envmaps == ["courtyard"]
    for asset in whole.asset_ids:
        got, want = union.views(asset), whole.views(asset)
        assert [(r.file, r.set, r.lighting) for r in got] == [(r.file, r.set, r.lighting) for r in want]
        np.testing.assert_array_equal(got[0].camera.viewmat, want[0].camera.viewmat)
        for kind in ("lh", "bc"):
            for got, want in zip(union.slat(asset, kind), whole.slat(asset, kind), strict=True):
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(union.prior_coords(asset), whole.prior_coords(asset))
        rec = whole.views(asset, "relit")[0]
        np.testing.assert_array_equal(union.read(rec)["rgba"], whole.read(rec)["rgba"])
        np.testing.assert_array_equal(union.environment(rec).baked(), whole.environment(rec).baked())
        assert union.asset_dir(asset).parent.parent in (a, b)
    assert isinstance(open_dataset([str(a)]), NearDataset)


def test_a_union_refuses_shared_assets_and_different_held_out_maps(halves, tmp_path) -> None:
    _, a, b = halves
    with pytest.raises(NearError, match="in both"):
        DatasetUnion([a, a])
    other = tmp_path / "other"
    shutil.copytree(b, other)
    cfg = json.loads((other / "config.json").read_text())
    gen = cfg.get("generation", cfg)
    gen["holdout_envmaps"] = ["sunset"]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NearError, match="--holdout-envmaps"):
        DatasetUnion([a, other])
    with pytest.raises(NearError, match="in none of"):
        DatasetUnion([a]).views("no-such-asset")
