"""`near train stage2` on the tiny Cycles dataset: a run from scratch, then a fine-tuning run that
starts from its export (``init_from``) with the diffuse shading prior and the base-pass silhouette
loss, as ``make default-model`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from near_blender.pipeline import NearPipeline

REPO = Path(__file__).resolve().parents[2]


def _train(cfg: dict, path: Path) -> subprocess.CompletedProcess:
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "near_blender.cli",
        "train",
        "stage2",
        "--config",
        str(path),
        "--no-progress",
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_stage2_from_scratch_then_fine_tuned_with_the_shading_prior(tiny_dataset, tmp_path) -> None:
    base = {
        "data": str(tiny_dataset),
        "held_out_fraction": 0.0,
        "env_height": 32,
        "train": {"max_steps": 3, "batch_size": 1, "lr": 1e-3, "warmup_steps": 1, "ckpt_every": 3,
                  "log_every": 1, "ema_decay": None},
    }  # fmt: skip
    first = tmp_path / "first"
    r = _train({**base, "out": str(first)}, tmp_path / "first.json")
    assert r.returncode == 0, r.stderr + r.stdout
    recs = _records(first)
    assert [x["step"] for x in recs] == [1, 2, 3] and all(x["total"] > 0 for x in recs)
    assert "alpha_base_l1" not in recs[0]  # off unless configured

    tuned = tmp_path / "tuned"
    cfg = {
        **base,
        "out": str(tuned),
        "init_from": str(first / "model"),
        "model_overrides": {"neural_basis": {"shading_prior": "diffuse"}},
        "base_alpha_weight": 1.0,
        "voxel_base_color_weight": 1.0,
        "normal_weight": 0.5,
        "train": {**base["train"], "max_steps": 1, "lr": 0.0, "ckpt_every": 1},  # lr 0: weights stay put
    }
    r = _train(cfg, tmp_path / "tuned.json")
    assert r.returncode == 0, r.stderr + r.stdout
    rec = _records(tuned)[0]
    assert 0.0 < rec["alpha_base_l1"] <= 1.0 and 0.0 < rec["voxel_base_color"] <= 1.0
    assert 0.0 < rec["normal"] <= 2.0
    src, out = NearPipeline.from_pretrained(first / "model"), NearPipeline.from_pretrained(tuned / "model")
    assert out.models["neural_basis"].shading_prior == "diffuse"
    assert out.args["stage2"]["slat_normalization"] == src.args["stage2"]["slat_normalization"]
    last = str(len(out.models["neural_basis"].mlp) - 1)
    for name in ("decoder", "renderer", "hdri_encoder", "neural_basis"):
        a, b = src.models[name].state_dict(), out.models[name].state_dict()
        for k in a:
            if name == "neural_basis" and k.startswith(f"mlp.{last}."):
                assert torch.all(b[k][:3] == 0) and torch.equal(a[k][3:], b[k][3:]), k
            else:
                assert torch.equal(a[k], b[k]), (name, k)

    _check_switch_then_refit(cfg, base, out, last, tmp_path)
    _check_glossy_fit_step(cfg, tmp_path)

    bad = _train(
        {**cfg, "out": str(tmp_path / "bad"), "init_from": str(tmp_path / "none")}, tmp_path / "b.json"
    )
    assert bad.returncode != 0 and "not a stage-2 export" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def _check_switch_then_refit(cfg: dict, base: dict, out: NearPipeline, last: str, tmp_path: Path) -> None:
    """The tuned run ``out`` (diffuse prior) converted to pbr by a 0-step run, then refitted with
    ``trainable``: only the named model moves."""
    # a 0-step run is a pure conversion (configs/experiments/stage2_pbr_switch.json): diffuse -> pbr
    # exports the tuned weights untrained, the residual's RGB rows zeroed again
    tuned_nb = out.models["neural_basis"]
    with torch.no_grad():  # give the residual something to zero
        tuned_nb.mlp[int(last)].bias[:3].fill_(0.5)
    tuned_nb_src = tmp_path / "tuned_nb"
    out.save_pretrained(tuned_nb_src)
    switch = {**cfg, "out": str(tmp_path / "switch"), "init_from": str(tuned_nb_src),
              "model_overrides": {"neural_basis": {"shading_prior": "pbr"}},
              "train": {**cfg["train"], "max_steps": 0, "warmup_steps": 0}}  # fmt: skip
    r = _train(switch, tmp_path / "switch.json")
    assert r.returncode == 0, r.stderr + r.stdout
    conv = NearPipeline.from_pretrained(tmp_path / "switch" / "model")
    assert conv.models["neural_basis"].shading_prior == "pbr"
    b = conv.models["neural_basis"].state_dict()
    assert torch.all(b[f"mlp.{last}.bias"][:3] == 0) and torch.all(tuned_nb.mlp[int(last)].bias[:3] == 0.5)
    assert torch.equal(b[f"mlp.{last}.weight"][3:], tuned_nb.mlp[int(last)].weight[3:])
    ren = out.models["renderer"].state_dict()
    assert all(torch.equal(v, ren[k]) for k, v in conv.models["renderer"].state_dict().items())

    # trainable: only the named models move (a residual refit after the switch)
    refit = {**switch, "out": str(tmp_path / "refit"), "init_from": str(tmp_path / "switch" / "model"),
             "trainable": ["neural_basis"], "train": {**base["train"], "max_steps": 2, "lr": 1e-2}}  # fmt: skip
    r = _train(refit, tmp_path / "refit.json")
    assert r.returncode == 0, r.stderr + r.stdout
    fit = NearPipeline.from_pretrained(tmp_path / "refit" / "model")
    for name in ("decoder", "renderer", "hdri_encoder", "neural_basis"):
        a, b = conv.models[name].state_dict(), fit.models[name].state_dict()
        same = all(torch.equal(a[k], b[k]) for k in a)
        assert same == (name != "neural_basis"), name
    bad = _train({**refit, "out": str(tmp_path / "bad_t"), "trainable": ["radiance"]}, tmp_path / "bt.json")
    assert bad.returncode != 0 and "trainable" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


def _check_glossy_fit_step(cfg: dict, tmp_path: Path) -> None:
    """The shipped recipe's last step: a 0-step switch to pbr_dielectric with fit_glossy_weight
    stores the fitted weight in the export and glossy_fit.json; a rerun keeps both."""
    run = tmp_path / "glossy"
    glossy = {**cfg, "out": str(run), "init_from": cfg["out"] + "/model", "fit_glossy_weight": True,
              "model_overrides": {"neural_basis": {"shading_prior": "pbr_dielectric"}},
              "train": {**cfg["train"], "max_steps": 0, "warmup_steps": 0}}  # fmt: skip
    r = _train(glossy, tmp_path / "glossy.json")
    assert r.returncode == 0, r.stderr + r.stdout
    report = json.loads((run / "glossy_fit.json").read_text())
    weight = report["glossy_weight"]
    assert f"{weight:.2f}" in report["psnr_by_weight"] and report["views"] >= 1
    assert max(report["psnr_by_weight"].values()) == report["psnr_by_weight"][f"{weight:.2f}"]
    saved = json.loads((run / "model" / "ckpts" / "neural_basis.json").read_text())["args"]
    assert saved["glossy_weight"] == weight and saved["shading_prior"] == "pbr_dielectric"
    stamp = (run / "glossy_fit.json").stat().st_mtime_ns
    r = _train(glossy, tmp_path / "glossy.json")  # resumed: the fit is not redone, the weight stays
    assert r.returncode == 0 and (run / "glossy_fit.json").stat().st_mtime_ns == stamp
    assert NearPipeline.from_pretrained(run / "model").models["neural_basis"].glossy_weight == weight
    further = {**glossy, "train": {**glossy["train"], "max_steps": 1, "lr": 1e-3}}  # trained on: refit
    r = _train(further, tmp_path / "glossy.json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads((run / "glossy_fit.json").read_text())["step"] == 1
    bad = _train({**glossy, "out": str(tmp_path / "bad_g"),
                  "model_overrides": {"neural_basis": {"shading_prior": "diffuse"}}}, tmp_path / "bg.json")  # fmt: skip
    assert (
        bad.returncode != 0 and "shading_prior" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    )


def test_coupled_fine_tuning_on_stage1_samples(tiny_dataset, tiny_pipeline, tmp_path) -> None:
    """`near train stage1-samples` runs a pipeline's stage 1 on the training inputs; a stage-2 run
    with voxel normals and the base-colour skip then trains on them (as `make default-model`)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    samples = tmp_path / "samples"
    cmd = [sys.executable, "-m", "near_blender.cli", "train", "stage1-samples", "--model", str(tiny_pipeline),
           "--data", str(tiny_dataset), "--out", str(samples), "--inputs", "1", "--sampler-steps", "2",
           "--no-progress"]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    files = sorted(samples.glob("*/input*.npz"))
    assert len(files) == 1  # one of the two assets is held out of training (split 0.2 of 2: 1 left)
    with np.load(files[0]) as z:
        assert z["feats"].shape == (len(z["coords"]), 16) and np.isfinite(z["feats"]).all()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and '"written": 0' in again.stdout  # resumed: nothing redone

    cfg = {
        "data": str(tiny_dataset), "out": str(tmp_path / "coupled"), "env_height": 32,
        "base_color_skip": True, "stage1_samples": str(samples), "stage1_sample_prob": 1.0,
        "voxel_base_color_weight": 1.0,
        "model_overrides": {"renderer": {"representation_config": {"normal_source": "voxels"}}},
        "train": {"max_steps": 2, "batch_size": 1, "lr": 1e-3, "warmup_steps": 1, "ckpt_every": 2,
                  "log_every": 1, "ema_decay": None},
    }  # fmt: skip
    r = _train(cfg, tmp_path / "coupled.json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert [x["step"] for x in _records(tmp_path / "coupled")] == [1, 2]
    out = NearPipeline.from_pretrained(tmp_path / "coupled" / "model")
    skip = out.models["renderer"].base_color_skip
    assert skip["channels"] == [8, 9, 10] and out.models["renderer"].rep.normal_source == "voxels"
    norm = out.args["stage2"]["slat_normalization"]
    assert skip["mean"] == norm["mean"][8:11] and skip["std"] == norm["std"][8:11]

    bad = subprocess.run(
        cmd[:5] + ["--data", str(tiny_dataset)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert (
        bad.returncode != 0 and "needs --model" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    )
