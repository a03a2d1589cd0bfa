"""`near train stage1` with the projected Z_s on the tiny Cycles dataset, assembled with a stage-2
run into one pipeline as ``make default-model`` does; stage 1 then needs the input camera."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.dataset import NearDataset
from near_blender.pipeline import NearPipeline
from near_blender.train.default_model import assemble_pipeline

REPO = Path(__file__).resolve().parents[2]
TRAIN = {"batch_size": 1, "lr": 1e-3, "warmup_steps": 1, "ckpt_every": 2, "log_every": 1, "ema_decay": None}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "near_blender.cli", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_stage1_with_projected_zs_trains_assembles_and_needs_the_camera(tiny_dataset, tmp_path) -> None:
    s1 = {
        "data": str(tiny_dataset), "out": str(tmp_path / "s1"), "held_out_fraction": 0.0, "image_size": 32,
        "encoder": {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2},
        "flow": {"model_channels": 16, "num_blocks": 1, "num_heads": 2, "num_io_res_blocks": 1,
                 "io_block_channels": [16]},
        "lora": {"rank": 4, "use_rslora": True}, "zs_source": "projection",
        "base_train": {**TRAIN, "max_steps": 2}, "lh_train": {**TRAIN, "max_steps": 2},
        "sampler": {"steps": 2, "rescale_t": 3.0, "cfg_strength": 0.0},
    }  # fmt: skip
    (tmp_path / "s1.json").write_text(json.dumps(s1))
    r = _cli("train", "stage1", "--config", str(tmp_path / "s1.json"), "--no-progress")
    assert r.returncode == 0, r.stderr + r.stdout
    s2 = {"data": str(tiny_dataset), "out": str(tmp_path / "s2"), "held_out_fraction": 0.0,
          "train": {**TRAIN, "max_steps": 1, "ckpt_every": 1}}  # fmt: skip
    (tmp_path / "s2.json").write_text(json.dumps(s2))
    r = _cli("train", "stage2", "--config", str(tmp_path / "s2.json"), "--no-progress")
    assert r.returncode == 0, r.stderr + r.stdout

    assemble_pipeline(tmp_path / "s2", tmp_path / "s1", tmp_path / "pipe")
    pipe = NearPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.needs_input_camera
    norms = pipe.args["stage1"]["normalization"]
    assert len(norms["projection"]["mean"]) == 8 and len(norms["lh"]["mean"]) == 16
    lh_flow = pipe.models["lh_slat_flow_model"]
    assert lh_flow.in_channels == 16 + 8  # [x_t, projected Z_s]
    # the widened output rows (base-colour channels 8-15) started at zero and were trained
    assert (
        float(lh_flow.out_layer.weight[8:].abs().sum()) > 0
        and float(lh_flow.out_layer.bias[8:].abs().sum()) > 0
    )

    ds = NearDataset(tiny_dataset)
    asset = ds.asset_ids[0]
    coords, _ = ds.slat_features(asset, True)
    rec = ds.views(asset, "inputs")[0]
    rgba = ds.read(rec)["rgba"]
    cam = (rec.camera.viewmat, rec.camera.K)
    feats = pipe.image_to_slat(rgba, coords, seed=0, steps=2, camera=cam)
    assert feats.shape == (len(coords), 16) and np.isfinite(feats).all()
    again = pipe.image_to_slat(rgba, coords, seed=0, steps=2, camera=cam)
    np.testing.assert_array_equal(feats, again)  # deterministic for a seed
    darker = rgba * np.array([0.2, 0.2, 0.2, 1.0], np.float32)
    other = pipe.image_to_slat(darker, coords, seed=0, steps=2, camera=cam)
    assert not np.allclose(other, feats)  # the projected image reaches the output
    with pytest.raises(NearError, match="needs the camera"):
        pipe.image_to_slat(rgba, coords, seed=0, steps=2)


def test_stage1_delight_calibrates_assembles_and_reads_the_image(tiny_dataset, tmp_path) -> None:
    from near_blender.train.stage1_delight import fit_delight_stage1

    result = fit_delight_stage1(str(tiny_dataset), str(tmp_path / "s1"), inputs=2, held_out_fraction=0.0,
                                progress=False)  # fmt: skip
    cal = json.loads((tmp_path / "s1" / "calibration.json").read_text())
    assert cal["method"] == "delight" and len(cal["channels"]) == 16
    report = json.loads((tmp_path / "s1" / "report.json").read_text())
    train = report["colour_l1_seen"]["train"]
    assert train == result["train"] and all(0 <= v < 1 for v in train.values())
    # the two assets have constant, different base colours: the delit colour tells them apart,
    # a constant colour cannot
    assert train["delight"] < train["constant"]
    s2 = {"data": str(tiny_dataset), "out": str(tmp_path / "s2"), "held_out_fraction": 0.0, "use_bc_slat": True,
          "train": {**TRAIN, "max_steps": 1, "ckpt_every": 1}}  # fmt: skip
    (tmp_path / "s2.json").write_text(json.dumps(s2))
    r = _cli("train", "stage2", "--config", str(tmp_path / "s2.json"), "--no-progress")
    assert r.returncode == 0, r.stderr + r.stdout
    stale = tmp_path / "pipe" / "ckpts" / "lh_slat_flow_model.safetensors"  # an earlier flow model
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    assemble_pipeline(tmp_path / "s2", tmp_path / "s1", tmp_path / "pipe")
    assert not stale.exists() and (tmp_path / "pipe" / "ckpts" / "decoder.safetensors").is_file()
    pipe = NearPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.stage1_method == "delight" and pipe.needs_input_camera
    assert "lh_slat_flow_model" not in pipe.models  # no flow to ship

    ds = NearDataset(tiny_dataset)
    asset = ds.asset_ids[0]
    coords = ds.prior_coords(asset)
    rec = ds.views(asset, "inputs")[0]
    rgba = ds.read(rec)["rgba"]
    cam = (rec.camera.viewmat, rec.camera.K)
    feats = pipe.image_to_slat(rgba, coords, camera=cam)
    assert feats.shape == (len(coords), 16) and np.isfinite(feats).all()
    np.testing.assert_array_equal(feats, pipe.image_to_slat(rgba, coords, seed=5, camera=cam))  # no noise
    # the image reaches the output: with base-colour channels = the delit colour (two training
    # assets make too few points for a calibration that is not clipped flat), other colours with
    # the same shading give other base colours
    channels = pipe.args["stage1"]["calibration"]["channels"]
    for j, c in zip((8, 9, 10), "rgb"):
        channels[j] = {"features": [f"albedo_{c}"], "coef": [1.0], "clip": None}
    feats = pipe.image_to_slat(rgba, coords, camera=cam)
    swapped = rgba[..., [2, 1, 0, 3]]
    other = pipe.image_to_slat(swapped, coords, camera=cam)
    # (the shading is fitted to the luminance, which the swap changes, and highlights are capped by
    # it; colour ratios keep both out)
    np.testing.assert_allclose(other[:, 8] / other[:, 10], feats[:, 10] / feats[:, 8], rtol=0.05)
    assert np.abs(other[:, 8:11] - feats[:, 8:11]).mean() > 0.05
    with pytest.raises(NearError, match="--camera"):
        pipe.image_to_slat(rgba, coords)

    r = _cli("train", "stage1-delight", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
