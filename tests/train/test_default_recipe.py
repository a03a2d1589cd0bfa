"""``make default-model``'s recipe (``near_blender/train/default_model.py``): its stage-2 configs
form one chain of fine-tunings on the recipe's data, ending in the run that ships."""

from __future__ import annotations

import json

from near_blender.train import default_model as recipe
from tests.conftest import REPO

# the stage-2 configs (configs/default_<name>.json) in the order build_default_model trains them
CHAIN = [
    "stage2",
    "stage2_finetune",
    "stage2_normals",
    "stage2_skip",
    "stage2_coupled",
    "stage2_sharp",
    "stage2_glossy",
]


def _config(name: str) -> dict:
    return json.loads((REPO / "configs" / f"default_{name}.json").read_text())


def test_each_fine_tuning_starts_from_the_run_before_it_and_the_last_one_ships():
    configs = [_config(name) for name in CHAIN]
    assert not configs[0].get("init_from")
    for before, cfg in zip(configs, configs[1:], strict=False):
        assert cfg["init_from"] == f"{before['out']}/model", cfg["out"]
    assert configs[-1]["out"] == f"{recipe.RUNS}/{recipe.STAGE2_RUN}"
    assert _config("stage2_skip")["out"] == f"{recipe.RUNS}/{recipe.STAGE2_BEFORE_COUPLING}"
    assert _config("stage2_coupled")["out"] == f"{recipe.RUNS}/{recipe.STAGE2_COUPLED}"
    assert _config("stage2_sharp")["out"] == f"{recipe.RUNS}/{recipe.STAGE2_LAST_COUPLED}"


def test_the_shipped_run_switches_the_shading_prior_without_training_and_keeps_the_rest():
    """The last step changes the sharp run's shading prior (diffuse -> pbr_dielectric) and fits the
    glossy weight, without training; every other model option is the sharp run's."""
    sharp, last = _config("stage2_sharp"), _config("stage2_glossy")
    assert sharp["model_overrides"]["neural_basis"]["shading_prior"] == "diffuse"
    assert last["model_overrides"]["neural_basis"]["shading_prior"] == "pbr_dielectric"
    assert last["train"]["max_steps"] == 0 and last["fit_glossy_weight"] is True
    assert last["model_overrides"]["renderer"] == sharp["model_overrides"]["renderer"]
    for key in ("model", "use_bc_slat", "base_color_skip", "env_height", "held_out_fraction"):
        assert last[key] == sharp[key], key


def test_each_run_reads_the_recipe_data_and_the_coupling_reads_stage_1_outputs():
    for name in CHAIN:
        cfg = _config(name)
        assert cfg["data"] == recipe.DATA, name
        assert cfg.get("stage1_samples") == (
            f"{recipe.RUNS}/{recipe.SAMPLES}" if name in ("stage2_coupled", "stage2_sharp") else None
        )
