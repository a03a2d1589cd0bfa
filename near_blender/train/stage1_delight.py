"""``near train stage1-delight``: calibrate the delighting stage 1 on a dataset and measure it.

The delighting stage 1 (:mod:`near_blender.data.delighting`) has no network: its learned parts
are an optional light model (a ridge regression of the input light's colour gain on image
statistics, used when a 4-fold cross-validation over the training assets says it helps) and a
linear calibration from per-voxel features (delit colour, prior normals, visibility) to the
LH-SLAT channels. :func:`fit_delight_stage1` delights the first ``inputs`` input views of every
training asset on its geometry prior, pairs them with the ground-truth LH-SLAT on the voxels both
share, fits the light model to each image's best colour gain, then the calibration by least
squares, and writes::

    <out>/calibration.json   {"method": "delight", "channels": [...]}   (args.stage1.calibration)
    <out>/report.json        stage-1 colour error on train and held-out assets (see below)

The report holds, for the training and the held-out assets, the mean L1 of the LH-SLAT's colour
channels (0-2, and the base colour 8-10 when present) on the voxels the input camera sees, for
three estimates: ``delight`` (this stage 1), ``projection`` (the raw projected input colour, with
the same calibration's gain: what the image says before its lighting is divided out) and
``constant`` (the training assets' mean colour). Both files are written atomically; a rerun
recomputes them (about 5 s per asset on 2 cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..data.dataset import NearDataset
from ..data.delighting import (
    DelitImage,
    calibrated_slat,
    delight_image,
    fit_calibration,
    fit_light_model,
    light_gain,
    oracle_log_gain,
    prior_geometry,
)
from ..utils.atomic import atomic_write_json

COLOUR_CHANNELS = (0, 1, 2, 8, 9, 10)


def align_to(coords: np.ndarray, ref_coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` with ``coords[i] == ref_coords[j]`` (the voxels both sets hold)."""
    from ..data.voxelize import VoxelIndex

    j = VoxelIndex(ref_coords).find(np.asarray(coords, np.int64))
    return np.nonzero(j >= 0)[0], j[j >= 0]


def delit_inputs(
    ds: NearDataset, asset_id: str, inputs: int, with_bc: bool
) -> list[tuple[DelitImage, np.ndarray, np.ndarray, np.ndarray]]:
    """For the first ``inputs`` input views of an asset: (delit image on the prior, its projected raw
    colour [N, 3], prior indices of the voxels with ground truth, the ground truth there [M, C])."""
    from ..data.image_projection import project_image_features

    prior = ds.prior_coords(asset_id)
    gt_coords, gt = ds.slat_features(asset_id, with_bc)
    i_prior, i_gt = align_to(prior, gt_coords)
    if len(i_prior) == 0:
        raise NearError(f"{asset_id}: its geometry prior and its LH-SLAT share no voxel.")
    recs = sorted(ds.views(asset_id, "inputs"), key=lambda r: r.index)[:inputs]
    if not recs:
        raise NearError(f"{asset_id} has no input views; re-run `near datagen` with --input-views.")
    geo = prior_geometry(prior)
    out = []
    for rec in recs:
        rgba = ds.read(rec)["rgba"]
        lit = delight_image(rgba, rec.camera.viewmat, rec.camera.K, prior, geometry=geo)
        raw = project_image_features(rgba, rec.camera.viewmat, rec.camera.K, prior)[:, :3].astype(np.float64)
        out.append((lit, raw, i_prior, gt[i_gt]))
    return out


def colour_errors(
    items: list[tuple[DelitImage, np.ndarray, np.ndarray, np.ndarray]],
    calibration: dict[str, Any],
    constant: np.ndarray,
) -> dict[str, float]:
    """Mean L1 of the colour channels on the seen voxels: delight, projection, constant."""
    chans = [c for c in COLOUR_CHANNELS if c < len(calibration["channels"])]
    err: dict[str, list[float]] = {"delight": [], "projection": [], "constant": []}
    for lit, raw, idx, gt in items:
        seen = lit.seen[idx]
        if not seen.any():
            continue
        est = calibrated_slat(lit, calibration)[idx][seen][:, chans]
        # the raw projection, through the same calibration as if it were the delit colour
        plain = DelitImage(raw, lit.seen, lit.shading_sh, lit.geometry, lit.lighting)
        proj = calibrated_slat(plain, calibration)[idx][seen][:, chans]
        truth = gt[seen][:, chans]
        err["delight"].append(float(np.abs(est - truth).mean()))
        err["projection"].append(float(np.abs(proj - truth).mean()))
        err["constant"].append(float(np.abs(constant[None, chans] - truth).mean()))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in err.items()}


CV_FOLDS = 4
# light models tried: which image statistics (delighting.LIGHT_STAT_NAMES) predict the light's gain
LIGHT_MODELS: dict[str, tuple[str, ...]] = {
    "level": ("log_lum_mean", "one"),
    "level_shape": ("log_lum_mean", "log_lum_p90", "log_lum_p10", "dark_fraction", "one"),
}


def _fit(items: list[tuple[DelitImage, np.ndarray, np.ndarray, np.ndarray]], light_model: str | None,
         colour: slice) -> dict[str, Any]:  # fmt: skip
    """The calibration (with the named light model, or none) fitted on ``items``."""
    extra: dict[str, Any] = {}
    if light_model is not None:
        extra["light"] = fit_light_model(
            np.stack([lit.lighting for lit, *_ in items]),
            np.stack([oracle_log_gain(lit, idx, gt, colour) for lit, _, idx, gt in items]),
            use=LIGHT_MODELS[light_model],
        )
    samples = [(lit.features(light_gain(lit, extra))[idx], gt) for lit, _, idx, gt in items]
    return {**fit_calibration(samples), **extra}


def fit_delight_stage1(
    data: str, out: str, inputs: int = 6, held_out_fraction: float = 0.2, with_bc: bool = True,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Calibrate on the training split of ``data``, measure on both splits, write ``out``."""
    ds = NearDataset(data)
    train, held = ds.split(held_out_fraction)
    if not train:
        raise NearError(f"{data} has no training assets.")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(train) + len(held), desc="stage-1 delight", unit="asset")
    per_asset: dict[str, list[tuple[DelitImage, np.ndarray, np.ndarray, np.ndarray]]] = {}
    for aid in [*train, *held]:
        per_asset[aid] = delit_inputs(ds, aid, inputs, with_bc)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    colour = slice(8, 11) if with_bc else slice(0, 3)
    # which light model (none, or one of LIGHT_MODELS) predicts held-out assets best: k-fold over
    # the training assets, never the held-out ones
    folds = [train[i::CV_FOLDS] for i in range(min(CV_FOLDS, len(train)))]
    cv = {}
    for name in (None, *LIGHT_MODELS):
        errs = []
        for fold in folds if len(folds) > 1 else []:
            fit_on = [x for a in train if a not in fold for x in per_asset[a]]
            cal = _fit(fit_on, name, colour)
            errs.append(colour_errors([x for a in fold for x in per_asset[a]], cal, np.zeros(64))["delight"])
        cv[str(name)] = float(np.mean(errs)) if errs else float("nan")
    best = min((None, *LIGHT_MODELS), key=lambda n: cv[str(n)] if np.isfinite(cv[str(n)]) else np.inf)
    calibration = _fit([x for a in train for x in per_asset[a]], best, colour)
    constant = np.concatenate([gt for a in train for *_, gt in per_asset[a]]).mean(0)
    report = {
        "data": str(data),
        "inputs": inputs,
        "train_assets": train,
        "held_out_assets": held,
        "light_model": str(best),
        "light_model_cv_l1": cv,
        "colour_l1_seen": {
            "train": colour_errors([x for a in train for x in per_asset[a]], calibration, constant),
            "held_out": colour_errors([x for a in held for x in per_asset[a]], calibration, constant),
        },
    }
    atomic_write_json(folder / "calibration.json", calibration)
    atomic_write_json(folder / "report.json", report)
    return {"out": str(folder), **report["colour_l1_seen"]}
