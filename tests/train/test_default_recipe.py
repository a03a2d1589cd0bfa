"""``make default-model``'s recipe (``near_blender/train/default_model.py``): its configs form one
chain of fine-tunings on the right data, and its side-by-side datagen shards fill one dataset."""

from __future__ import annotations

import json

import pytest

from near_blender.train import default_model as recipe
from tests.conftest import REPO, TINY

# the stage-2 configs (configs/default_<name>.json) in the order build_default_model trains them
CHAIN = ["stage2", "stage2_finetune", "stage2_normals", "stage2_skip", "stage2_coupled", *recipe.V2_RUNS]


def _config(name: str) -> dict:
    return json.loads((REPO / "configs" / f"default_{name}.json").read_text())


def test_each_fine_tuning_starts_from_the_run_before_it_and_the_last_one_ships():
    configs = [_config(name) for name in CHAIN]
    assert not configs[0].get("init_from")
    for before, cfg in zip(configs, configs[1:], strict=False):
        assert cfg["init_from"] == f"{before['out']}/model", cfg["out"]
    assert configs[-1]["out"] == f"{recipe.RUNS}/{recipe.STAGE2_RUN}"
    assert _config("stage2_coupled")["out"] == f"{recipe.RUNS}/{recipe.STAGE2_COUPLED}"
    assert _config("stage2_skip")["out"] == f"{recipe.RUNS}/{recipe.STAGE2_BEFORE_COUPLING}"


def test_each_run_reads_the_data_and_stage_1_outputs_the_recipe_makes_for_it():
    for name in CHAIN:
        cfg = _config(name)
        v2 = name in recipe.V2_RUNS
        assert cfg["data"] == (recipe.V2_DATA if v2 else recipe.DATA), name
        if v2 or name == "stage2_coupled":
            assert cfg["stage1_samples"] == f"{recipe.RUNS}/{recipe.V2_SAMPLES if v2 else recipe.SAMPLES}"
    assert "--library" in recipe.V2_DATAGEN_ARGS and "--library" not in recipe.DATAGEN_ARGS


@pytest.mark.bpy
@pytest.mark.slow
def test_side_by_side_shards_fill_one_dataset(tmp_path):
    """Two shards at once into one folder (as the recipe renders data/v2): both assets, each with
    its views, one config, one manifest row per render."""
    pytest.importorskip("bpy")
    from near_blender.data.dataset import NearDataset
    from near_blender.data.layout import shard_of

    assets = ("proc:cube", "proc:torus")  # ids proc-cube-eea7acec (shard 0/2), proc-torus-106cbb20 (1/2)
    assert {shard_of("proc-cube-eea7acec", 2), shard_of("proc-torus-106cbb20", 2)} == {0, 1}
    rest = TINY[TINY.index("--engine") : TINY.index("--threads")]
    recipe.run_datagen_shards(str(tmp_path), ("--assets", *assets, *rest, "--progress", "none"), cores=2)
    ds = NearDataset(tmp_path)
    assert sorted(ds.asset_ids) == ["proc-cube-eea7acec", "proc-torus-106cbb20"]
    for asset in ds.asset_ids:
        assert len(ds.views(asset, "relit")) == 1 and len(ds.views(asset, "inputs")) == 2, asset
    logs = sorted(p.name for p in (tmp_path / "logs").glob("datagen-shard-*.log"))
    assert logs == ["datagen-shard-0-of-2.log", "datagen-shard-1-of-2.log"]
