"""The glossy-weight fit (near_blender.train.glossy_fit) on the tiny Cycles dataset: its score of
every weight is what a render at that weight scores, the model is left as it was, and a prior
without a glossy term is refused with a message naming the setting."""

from __future__ import annotations

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.dataset import NearDataset
from near_blender.pipeline import NearPipeline
from near_blender.render.tonemap import display_agx as display
from near_blender.scene import PlacedAsset, SceneRenderer
from near_blender.train.glossy_fit import GRID, fit_glossy_weight
from near_blender.train.metrics import psnr
from near_blender.train.stage2 import measure_normalization
from tests.models_stage2._stage2_helpers import tiny_stack


def _pipeline(ds: NearDataset, prior: str) -> NearPipeline:
    stack = tiny_stack(1, neural_basis={"shading_prior": prior, "glossy_weight": 0.7})
    norm = measure_normalization(ds, ds.asset_ids, False)
    args = {"stage2": {"slat_normalization": norm, "use_bc_slat": False, "env_height": 32}}
    return NearPipeline(models=stack.stage2_models(), args=args)


def _direct_mean_psnr(pipe: NearPipeline, ds: NearDataset, weight: float) -> float:
    """Mean PSNR of renders made with the weight set on the model (every envmap relit view)."""
    pipe.models["neural_basis"].set_glossy_weight(weight)
    renderer = SceneRenderer(pipe)
    scores = []
    for asset_id in ds.asset_ids:
        coords, feats = ds.slat_features(asset_id, False)
        placed = PlacedAsset((asset_id, "gt"), coords, feats, np.eye(4))
        for rec in ds.views(asset_id, "relit"):
            if rec.lighting.get("type") != "envmap":
                continue
            hdr = np.asarray(renderer.render([placed], rec.camera, ds.environment(rec))["hdr"], np.float64)
            scores.append(psnr(display(hdr[..., :3]), display(ds.read(rec)["rgba"][..., :3])))
    assert scores, "the tiny dataset has no envmap relit views"
    return float(np.mean(scores))


def test_fit_scores_every_weight_as_a_render_at_that_weight_would(tiny_dataset) -> None:
    ds = NearDataset(tiny_dataset)
    pipe = _pipeline(ds, "pbr_dielectric")
    fit = fit_glossy_weight(pipe, ds, ds.asset_ids, assets=10, views=100)
    assert pipe.models["neural_basis"].glossy_weight == 0.7  # left as it was
    assert sorted(fit.assets) == sorted(ds.asset_ids) and fit.views >= 2
    assert set(fit.psnr) == set(GRID) and fit.glossy_weight == max(fit.psnr, key=fit.psnr.__getitem__)
    # the glossy term is visible at this size: the scores differ across the grid
    assert max(fit.psnr.values()) - min(fit.psnr.values()) > 0.05
    for w in (0.0, 0.35, 1.2):  # two renders per view stand for every weight (compositing is linear)
        assert abs(_direct_mean_psnr(pipe, ds, w) - fit.psnr[w]) < 1e-3, w
    saved = fit.as_json()
    assert saved["glossy_weight"] == fit.glossy_weight and len(saved["psnr_by_weight"]) == len(GRID)


def test_fit_refuses_a_prior_without_a_glossy_term(tiny_dataset) -> None:
    ds = NearDataset(tiny_dataset)
    with pytest.raises(NearError, match="shading_prior"):
        fit_glossy_weight(_pipeline(ds, "diffuse_all"), ds, ds.asset_ids)
