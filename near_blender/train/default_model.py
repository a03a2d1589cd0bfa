"""``make default-model``: generate the data, train both stages, and assemble the bundled model.

One resumable command (every step skips what is already done, so rerunning it after an interruption
continues where it stopped):

1. ``near datagen`` of :data:`DATAGEN_ARGS` into ``data/default`` (procedural assets, Cycles 64²,
   two environment maps held out of training: ``courtyard`` and ``sunset``).
2. stage 2 with ``configs/default_stage2.json`` into ``runs/default/stage2``, then fine-tuned with
   the diffuse shading prior (``configs/default_stage2_finetune.json``, ``init_from`` the first
   run) into ``runs/default/stage2_diffuse``: the radiance MLP then learns only what a Lambertian
   surface does not explain (see :mod:`near_blender.models.radiance_mlp`); then once more with a
   normal loss (``configs/default_stage2_normals.json``) into ``runs/default/stage2_normals``,
   then with normals from the voxel shell and the base-colour skip
   (``configs/default_stage2_skip.json``) into ``runs/default/stage2_skip``.
3. stage 1 by delighting (:mod:`near_blender.data.delighting`): ``near train stage1-delight``
   calibrates it on the training assets' input views into ``runs/default/stage1_delight``
   (``calibration.json`` + ``report.json``, its colour error against the ground truth).
4. coupling: stage 1 (assembled with the last stage 2 into ``runs/default/pipeline_delight``) runs
   on 4 input views of every training asset (``near train stage1-samples`` into
   ``runs/default/stage1_delight_samples``), and stage 2 is fine-tuned once more on a mix of those
   outputs and the ground truth (``configs/default_stage2_coupled.json``) into
   ``runs/default/stage2_coupled``; then, on the same mix, with sharper splats
   (``configs/default_stage2_sharp.json``: the pixel filter at 0.1 px² and the scale floor at 0.6
   voxel) into ``runs/default/stage2_sharp``; last, the shading prior **"pbr_dielectric"** (the
   diffuse term for every surface plus a dielectric glossy term, :mod:`near_blender.models.radiance_mlp`;
   ``configs/default_stage2_glossy.json``, 0 steps: the sharp run's weights with the residual's RGB
   rows zeroed), its glossy weight fitted on the training assets under the training maps
   (:mod:`near_blender.train.glossy_fit`, ``glossy_fit.json``), into ``runs/default/stage2_glossy``,
   the run that ships.
5. :func:`assemble_pipeline`: the stage-2 export and the stage-1 calibration, merged into one
   ``from_pretrained`` folder, ``near_blender/weights/near-default`` (``pipeline.json`` +
   ``ckpts/*.json`` / ``*.safetensors``), with the held-out split recorded in ``args``.
6. :func:`write_heldout_fixture`: ``tests/fixtures/default_heldout.npz``, one held-out asset under a
   held-out map, for ``tests/test_default_model.py``.

Asset split: both trainers call ``NearDataset.split(0.2)``, which is deterministic, so stage 1 and
stage 2 hold out the same assets; the assembled ``pipeline.json`` records them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import NearError

REPO = Path(__file__).resolve().parents[2]
DATA = "data/default"
RUNS = "runs/default"
DATAGEN_ARGS: tuple[str, ...] = (
    "--procedural",
    "48",
    "--preset",
    "tiny",
    "--engine",
    "cycles",
    "--resolution",
    "64",
    "--relit-views",
    "6",
    "--relit-lights",
    "4",
    "--input-views",
    "6",
    "--shaded-views",
    "0",
    "--cond-views",
    "0",
    "--holdout-envmaps",
    "courtyard",
    "sunset",
)  # fmt: skip  (shaded and cond views feed only the paper's flow stage 1, which this model does not use)
STAGE2_RUN = "stage2_glossy"  # the run whose export ships (the sharp run, prior switched, weight fitted)
STAGE2_LAST_COUPLED = "stage2_sharp"  # the last run that trains on stage 1's outputs
STAGE2_COUPLED = "stage2_coupled"  # the first fine-tuning on stage 1's outputs
STAGE2_BEFORE_COUPLING = "stage2_skip"  # the stage 2 that the coupling step starts from
SAMPLE_INPUTS = 4  # input views per training asset that stage 1 runs on for the coupling step
STAGE1_RUN = "stage1_delight"  # the delighting stage 1's calibration
SAMPLES = "stage1_delight_samples"  # its outputs on the training inputs, for the coupling step


def bundled_folder() -> Path:
    """Where the default model ships: inside the package, so wheels and the extension carry it."""
    from ..models.hub import bundled_model_folder

    return bundled_model_folder()


def assemble_pipeline(stage2_dir: str | Path, stage1_dir: str | Path, out: str | Path) -> Path:
    """Merge the stage-2 export (``<stage2>/model``) and stage 1 into one pipeline folder ``out``;
    returns its ``pipeline.json``. Stage 1 is either the delighting calibration
    (``<stage1>/calibration.json`` from ``near train stage1-delight``) or the flow exports
    (``<stage1>/base/model``, ``<stage1>/homogenizer/model`` from ``near train stage1``).

    ``args.stage1`` = {method: "delight", calibration, resolution, train/held-out assets} or
    {normalization {shaded, lh}, image_size, zs_source, sampler, ...} (flow);
    ``args.stage2`` = the stage-2 run's settings (SLAT normalization, env height, ...).
    """
    from ..models.checkpoint import from_pretrained
    from ..pipeline import NearPipeline

    s2 = Path(stage2_dir) / "model"
    if not (s2 / "pipeline.json").is_file():
        raise NearError(
            f"Cannot assemble the default model: {s2 / 'pipeline.json'} is missing (train stage 2 first)."
        )
    stage2 = NearPipeline.from_pretrained(s2)
    s2_channels = len(stage2.args["stage2"]["slat_normalization"]["mean"])
    from .stage2 import MODEL_NAMES

    models = {k: m for k, m in stage2.models.items() if k in MODEL_NAMES}
    calibration = Path(stage1_dir) / "calibration.json"
    if calibration.is_file():
        cal = json.loads(calibration.read_text())
        report_file = Path(stage1_dir) / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        if len(cal.get("channels", [])) != s2_channels:
            raise NearError(
                f"Stage 1 ({calibration}) makes {len(cal.get('channels', []))}-channel LH-SLATs but stage 2 "
                f"reads {s2_channels}; calibrate stage 1 on a dataset with the same SLAT layout."
            )
        stage1: dict[str, Any] = {
            "method": "delight",
            "calibration": cal,
            "resolution": 64,
            "train_assets": report.get("train_assets", []),
            "held_out_assets": report.get("held_out_assets", []),
        }
    else:
        base = Path(stage1_dir) / "base" / "model"
        homog = Path(stage1_dir) / "homogenizer" / "model"
        for need in (base / "slat_flow_model.json", homog / "lh_slat_flow_model.json"):
            if not need.is_file():
                raise NearError(
                    f"Cannot assemble the default model: neither {calibration} nor {need} exists (train stage 1 first)."
                )
        extra = json.loads((homog / "lh_slat_flow_model.stage1.json").read_text())
        cfg = extra.get("config", {})
        lh_norm = extra["normalization"]["lh"]
        if len(lh_norm["mean"]) != s2_channels:
            raise NearError(
                f"Stage 1 makes {len(lh_norm['mean'])}-channel LH-SLATs but stage 2 reads {s2_channels}; "
                "train both with the same use_bc_slat setting."
            )
        models["image_cond_model"] = from_pretrained(homog / "image_cond_model")
        models["slat_flow_model"] = from_pretrained(base / "slat_flow_model")
        models["lh_slat_flow_model"] = from_pretrained(homog / "lh_slat_flow_model")
        stage1 = {
            "normalization": extra["normalization"],
            "image_size": int(extra["image_size"]),
            "zs_source": extra.get("zs_source", "base_flow"),
            "sampler": cfg.get("sampler", {"steps": 25, "rescale_t": 3.0, "cfg_strength": 0.0}),
            "train_assets": extra.get("train_assets", []),
            "held_out_assets": extra.get("held_out_assets", []),
        }
    args: dict[str, Any] = {
        "model_id": "near-default",
        "stage1": stage1,
        "stage2": stage2.args["stage2"],
        "models": {name: f"ckpts/{name}" for name in models},
    }
    out = Path(out)
    pfile = NearPipeline(models=models, args=args).save_pretrained(out)
    for stale in (out / "ckpts").glob("*"):  # models of an earlier assembly that this one lacks
        if stale.is_file() and stale.name.split(".")[0] not in models:
            stale.unlink()
    return pfile


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def build_default_model(progress: bool = True, out: str | Path | None = None) -> dict[str, Any]:
    """Steps 1-6 above, each resumed; returns where things are and the model's size in MB."""
    py = [sys.executable, "-m", "near_blender.cli"]
    bar = [] if progress else ["--no-progress"]

    def run(*cmd: str) -> None:
        print("+", " ".join(cmd), flush=True)
        if subprocess.run([*py, *cmd], cwd=REPO).returncode != 0:
            raise NearError(f"`{' '.join(cmd)}` failed; fix the error above and rerun (it resumes).")

    run("datagen", "--out", DATA, *DATAGEN_ARGS, "--resume")
    for name in ("", "_finetune", "_normals", "_skip"):
        run("train", "stage2", "--config", f"configs/default_stage2{name}.json", *bar)
    if not (REPO / RUNS / STAGE1_RUN / "calibration.json").is_file():
        run("train", "stage1-delight", "--data", DATA, "--out", f"{RUNS}/{STAGE1_RUN}", *bar)
    coupled = REPO / RUNS / STAGE2_LAST_COUPLED / "model" / "pipeline.json"
    if not coupled.is_file():  # the samples are only needed until the last coupled run has finished
        inter = REPO / RUNS / "pipeline_delight"
        assemble_pipeline(REPO / RUNS / STAGE2_BEFORE_COUPLING, REPO / RUNS / STAGE1_RUN, inter)
        run("train", "stage1-samples", "--model", str(inter), "--data", DATA,
            "--out", f"{RUNS}/{SAMPLES}", "--inputs", str(SAMPLE_INPUTS), *bar)  # fmt: skip
    run("train", "stage2", "--config", "configs/default_stage2_coupled.json", *bar)
    run("train", "stage2", "--config", "configs/default_stage2_sharp.json", *bar)
    run("train", "stage2", "--config", "configs/default_stage2_glossy.json", *bar)
    dest = Path(out) if out else bundled_folder()
    pfile = assemble_pipeline(REPO / RUNS / STAGE2_RUN, REPO / RUNS / STAGE1_RUN, dest)
    size = folder_size_mb(dest)
    if size > 20:
        raise NearError(f"The default model is {size:.1f} MB; the bundled model must stay under 20 MB.")
    fixture = write_heldout_fixture(REPO / DATA, dest, REPO / "tests" / "fixtures" / "default_heldout.npz")
    return {"pipeline": str(pfile), "size_mb": round(size, 2), "test_fixture": str(fixture)}


def write_heldout_fixture(
    data: str | Path, pipeline_dir: str | Path, out: str | Path, views: int = 2
) -> Path:
    """A small ``.npz`` for the default model's test: the first held-out asset's ground-truth
    LH-SLAT (+ base-colour SLAT when the model reads it), ``views`` of its views under a held-out
    environment map (premultiplied HDR RGBA, camera), and that map downsampled to 64x128
    (area-exact, so the model's 32-row conditioning is unchanged).

    Keys: ``coords [N,3] int32``, ``feats [N,C] float32``, ``env [64,128,3] float32``, and per view
    ``i``: ``rgba_i [H,W,4]``, ``viewmat_i [4,4]``, ``K_i [3,3]``, ``rotation_z_i``, ``strength_i``.
    """
    import numpy as np

    from ..data.dataset import NearDataset
    from ..pipeline import read_pipeline_file
    from ..render.conditioning import downsample_equirect
    from ..utils.atomic import atomic_path

    ds = NearDataset(data)
    args = read_pipeline_file(Path(pipeline_dir) / "pipeline.json")["args"]
    held = args["stage2"]["held_out_assets"]
    recs = [r for a in held for r in ds.views(a, "relit_holdout")]
    if not recs:
        raise NearError(f"No relit_holdout views of held-out assets in {data}.")
    asset = recs[0].asset_id
    recs = [r for r in recs if r.asset_id == asset and r.envmap == recs[0].envmap][:views]
    coords, feats = ds.slat_features(asset, bool(args["stage2"].get("use_bc_slat")))
    arrays: dict[str, Any] = {
        "asset": np.array(asset),
        "envmap": np.array(recs[0].envmap),
        "coords": coords.astype(np.int32),
        "feats": feats.astype(np.float32),
        "env": downsample_equirect(ds.envmap(recs[0].envmap).radiance, 64).astype(np.float32),
    }
    for i, r in enumerate(recs):
        arrays[f"rgba_{i}"] = ds.read(r)["rgba"].astype(np.float32)
        arrays[f"viewmat_{i}"] = np.asarray(r.camera.viewmat, np.float64)
        arrays[f"K_{i}"] = np.asarray(r.camera.K, np.float64)
        arrays[f"rotation_z_{i}"] = np.array(float(r.lighting.get("rotation_z", 0.0)))
        arrays[f"strength_{i}"] = np.array(float(r.lighting.get("strength", 1.0)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return out
