"""Stage 2 learns through the real training path: ``train_stage2`` -> ``Trainer`` -> ``Stage2Step``
-> ``Stage2Loss`` on the tiny Cycles dataset (2 assets, 24 px), the near-tiny model.

The reference is the same run's first logged losses: after 80 steps the total loss must have
fallen by a margin that a broken step (no gradient to the model, a detached loss, a zero learning
rate) cannot reach. Measured on this CPU: total 0.73 (steps 1-5) -> 0.07 (steps 76-80), seed 0; the
dataset has one training view, so this is the step fitting a view, not generalising.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from near_blender.train.stage2 import Stage2Config, train_stage2

pytestmark = [pytest.mark.bpy, pytest.mark.slow]


def _totals(run) -> list[float]:  # noqa: ANN001
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln)["total"] for ln in lines if ln.strip() and "total" in json.loads(ln)]


def test_stage2_training_reaches_a_known_loss(tiny_dataset, tmp_path) -> None:
    train = {"max_steps": 80, "batch_size": 2, "lr": 3e-3, "warmup_steps": 5, "min_lr_ratio": 0.1,
             "grad_clip": 1.0, "ema_decay": 0.9, "ckpt_every": 1000, "log_every": 1, "seed": 0}  # fmt: skip
    cfg = Stage2Config(data=str(tiny_dataset), out=str(tmp_path / "run"), model="near-tiny", held_out_fraction=0.0,
                       train=train)  # fmt: skip
    result = train_stage2(cfg, progress=False)
    assert result["steps"] == 80 and result["train_views"] >= 1
    totals = _totals(tmp_path / "run")
    assert len(totals) == 80 and np.isfinite(totals).all()
    first, last = float(np.mean(totals[:5])), float(np.mean(totals[-5:]))
    print(f"stage-2 total loss: {first:.3f} (steps 1-5) -> {last:.3f} (steps 76-80)")
    assert last < 0.7 * first, (first, last)
    assert (tmp_path / "run" / "model").is_dir()  # the export the pipeline loads
