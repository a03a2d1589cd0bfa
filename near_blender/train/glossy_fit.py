"""Fit the glossy term's weight of a stage-2 model on its training assets (issue 16).

With a ``"pbr"`` or ``"pbr_dielectric"`` shading prior the radiance is ``D + w * S``: ``D`` the
diffuse term plus the radiance MLP, ``S`` the split-sum glossy term and ``w`` the radiance MLP's
``glossy_weight`` (:mod:`near_blender.models.radiance_mlp`). Compositing is linear in the per-Gaussian
radiance, so two renders per view (``w = 0`` and ``w = 1``) give the image for every ``w``; the fit
scores ``w`` on :data:`GRID` by the mean PSNR of the display images (AgX, as ``near eval`` scores)
against the dataset's renders, over training assets under training environment maps (``relit``
views, ground-truth LH-SLAT in: the G-buffer task on training data). Nothing held out is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import NearError
from ..data.dataset import AnyDataset
from ..models.radiance_mlp import GLOSSY_PRIORS

# candidate weights: 0 (no glossy term) to 1.5 in steps of 0.05
GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(31))


@dataclass
class GlossyFit:
    """The fitted weight, the mean PSNR (dB) of each candidate and what it was measured on."""

    glossy_weight: float
    psnr: dict[float, float]
    assets: list[str]
    views: int

    def as_json(self) -> dict[str, Any]:
        return {
            "glossy_weight": self.glossy_weight,
            "psnr_by_weight": {f"{w:.2f}": round(p, 4) for w, p in self.psnr.items()},
            "assets": self.assets,
            "views": self.views,
            "rule": "mean display-image PSNR over training assets under training maps (relit views)",
        }


def _pick(items: list[str], n: int) -> list[str]:
    """``n`` items spread evenly over ``items`` (deterministic)."""
    if n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def fit_glossy_weight(
    pipe: Any, ds: AnyDataset, asset_ids: list[str], assets: int = 12, views: int = 6, seed: int = 0
) -> GlossyFit:
    """The :data:`GRID` weight with the best mean PSNR (see the module docstring).

    ``pipe``: a :class:`~near_blender.pipeline.NearPipeline` holding stage 2 (its ``args.stage2``
    says whether the LH-SLAT carries the base-colour channels); ``assets`` of ``asset_ids`` and up
    to ``views`` of each one's environment-map ``relit`` views (drawn with ``seed``) are scored.
    The model's weight is left as it was.
    """
    from ..render.tonemap import display_agx as display
    from ..scene import PlacedAsset, SceneRenderer
    from .metrics import psnr

    model = pipe.stage2()
    basis = model.neural_basis
    if model.shading_prior not in GLOSSY_PRIORS:
        raise NearError(
            f"fit_glossy_weight needs a glossy shading prior {GLOSSY_PRIORS}; this model's is "
            f"{model.shading_prior!r} (set it in model_overrides.neural_basis.shading_prior)."
        )
    with_bc = bool((pipe.args.get("stage2") or {}).get("use_bc_slat"))
    renderer = SceneRenderer(pipe, max_assets=2, max_lightings=2)
    rng = np.random.default_rng(seed)
    scores: list[list[float]] = []
    chosen = _pick(asset_ids, assets)
    before = basis.glossy_weight

    def render(weight: float, placed: Any, rec: Any, env: Any) -> np.ndarray:
        basis.set_glossy_weight(weight)
        return np.asarray(renderer.render([placed], rec.camera, env)["hdr"], np.float64)[..., :3]

    try:
        for asset_id in chosen:
            coords, feats = ds.slat_features(asset_id, with_bc)
            placed = PlacedAsset((asset_id, "gt"), coords, feats, np.eye(4))
            recs = [r for r in ds.views(asset_id, "relit") if r.lighting.get("type") == "envmap"]
            if not recs:
                continue
            for i in sorted(rng.choice(len(recs), min(views, len(recs)), replace=False)):
                rec = recs[int(i)]
                env = ds.environment(rec)
                gt = display(ds.read(rec)["rgba"][..., :3])
                diffuse = render(0.0, placed, rec, env)
                glossy = render(1.0, placed, rec, env) - diffuse
                scores.append([psnr(display(diffuse + w * glossy), gt) for w in GRID])
    finally:
        basis.set_glossy_weight(before)
    if not scores:
        raise NearError(
            "fit_glossy_weight found no environment-map `relit` views of the training assets; "
            "make the dataset with `near datagen --relit-views N` (N > 0)."
        )
    mean = np.asarray(scores).mean(axis=0)
    best = GRID[int(mean.argmax())]
    return GlossyFit(best, {w: float(p) for w, p in zip(GRID, mean)}, chosen, len(scores))
