"""Stage 1's homogenizer learns to read ``Z_s`` (issue 16): a toy task through the real training path.

Toy data: random sparse voxel sets; ``Z_s`` is random per voxel (8 channels, independent, with
offsets and scales like raw features) and the LH-SLAT target is a fixed linear function of it:
``[0.5 Z_s, 0.5 Z_s reversed]`` (16 channels, the LH + base-colour layout of the default model).
Both are standardized with :func:`~near_blender.train.stage1.normalize_features`, as in training.
The image is black, so ``Z_s`` is the only source of the target, voxel by voxel.

The homogenizer is built as :func:`~near_blender.train.stage1.train_stage1` builds it
(:func:`build_base_flow`, :func:`build_homogenizer`: the base flow widened with zero ``Z_s``
columns, PEFT LoRA, ``lora.train_modules`` and the widened output layer trained in full), trained
by the :class:`Trainer` with stage 1's flow-matching step and ``lh_train`` settings (fewer steps),
exported as stage 1 exports it (the EMA weights, adapters merged) and sampled with
:func:`~near_blender.pipeline.sample_normalized_slat` (few Euler steps; training samples ``Z_s``
with it too). Its samples must follow ``Z_s`` (R² against the target) and fall apart with a
voxel-shuffled or an all-zero ``Z_s``.

The flow is ``configs/experiments/stage1_io2.json``'s (two I/O res blocks: a full-resolution skip
connection). With the single I/O block of ``configs/experiments/stage1_flow.json`` (the flow the
shipped stage 1 was trained with) every voxel's input is mean-pooled over its 2³ cell before
anything else, so no flow with that structure can read a voxel's own ``Z_s`` (or its own noise);
:func:`test_single_io_block_flow_cannot_tell_voxels_of_a_cell_apart` pins that down.

This test found the defect behind issue 16: before the EMA decay warm-up
(:mod:`near_blender.train.ema`) the exported weights after 400 steps were still 0.999 ** 400 = 67 %
the initial ones (zero on ``Z_s``), and the samples ignored ``Z_s``: R² -0.80 with the real one,
-0.90 shuffled, -0.89 zero (``homogenizer_r2(out, ema_warmup=False)``), while the trained weights
themselves read it. With the warm-up: 0.66, -0.88, -0.21. ~50 s of CPU (one thread).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from near_blender.models.homogenizer import merged_model
from near_blender.models.sampler import FlowEulerSampler
from near_blender.pipeline import sample_normalized_slat
from near_blender.sparse import SparseTensor
from near_blender.train.stage1 import (
    SIGMA_MIN,
    ConditionedFlow,
    Stage1Config,
    _flow_step,
    _norm_stats,
    build_base_flow,
    build_homogenizer,
    normalize_features,
)
from near_blender.train.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
IO1_CONFIG = ROOT / "configs" / "experiments" / "stage1_flow.json"
IO2_CONFIG = ROOT / "configs" / "experiments" / "stage1_io2.json"
LH_CHANNELS = 16
STEPS = 400


def _voxel_sets(seed: int, count: int, n: int = 500, side: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` random voxel sets (coords [N, 3] in a side³ box) with raw ``Z_s`` [N, 8]."""
    rng = np.random.default_rng(seed)
    offset, scale = np.linspace(-1.0, 2.0, 8), np.linspace(0.3, 2.0, 8)
    out = []
    for _ in range(count):
        coords = np.unique(rng.integers(0, side, (n, 3)), axis=0).astype(np.int32)
        out.append((coords, (offset + scale * rng.standard_normal((len(coords), 8))).astype(np.float32)))
    return out


def _target(z: np.ndarray) -> np.ndarray:
    return np.concatenate([0.5 * z, 0.5 * z[:, ::-1]], axis=1)


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination over all channels (1 = exact, 0 = the target's mean)."""
    return float(1.0 - ((pred - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def _items(
    sets: list[tuple[np.ndarray, np.ndarray]], norms: dict[str, Any], size: int
) -> list[dict[str, Any]]:
    image = torch.zeros(3, size, size)
    return [
        {
            "record": None,
            "image": image,
            "coords": c,
            "feats": normalize_features(_target(z), norms["lh"]),
            "z_s": normalize_features(z, norms["projection"]),
        }
        for c, z in sets
    ]


def homogenizer_r2(out: Path, steps: int = STEPS, **train: Any) -> dict[str, float]:
    """Train the toy homogenizer for ``steps`` (``train``: more ``lh_train`` overrides) and return
    the R² of its samples against the target with the real, a voxel-shuffled and an all-zero Z_s."""
    cfg = Stage1Config.from_file(IO2_CONFIG)
    torch.manual_seed(0)
    base = build_base_flow(cfg)
    homog = build_homogenizer(cfg, base, LH_CHANNELS)

    sets = _voxel_sets(1, 16)
    norms = {
        "projection": _norm_stats([z for _, z in sets]),
        "lh": _norm_stats([_target(z) for _, z in sets]),
    }
    settings = {**cfg.lh_train, "max_steps": steps, "warmup_steps": steps // 10, "ckpt_every": 10**9,
                "log_every": 10**9, **train}  # fmt: skip
    trainer = Trainer(homog, _items(sets, norms, cfg.image_size), lambda m, b, r: _flow_step(m, b, r, True),
                      TrainConfig.from_dict(settings), out)  # fmt: skip
    trainer.fit(progress=False)

    # exported as stage 1 exports it: the EMA weights, adapters merged
    trained = trainer.ema.model if trainer.ema else trainer.model
    model = ConditionedFlow(trained.encoder, merged_model(copy.deepcopy(trained.flow)).eval())
    sampler = FlowEulerSampler(sigma_min=SIGMA_MIN, steps=10, rescale_t=3.0, cfg_strength=0.0)
    test = _items(_voxel_sets(7, 6), norms, cfg.image_size)
    rng = np.random.default_rng(0)
    r2 = {}
    for mode in ("real", "shuffled", "zero"):
        preds, targets = [], []
        for i, it in enumerate(test):
            z = it["z_s"]
            if mode == "shuffled":
                z = z[rng.permutation(len(z))]
            elif mode == "zero":
                z = np.zeros_like(z)
            with torch.no_grad():
                cond = model.encoder.encode(it["image"][None])
            g = torch.Generator().manual_seed(i)
            pred = sample_normalized_slat(model.flow, cond, it["coords"], sampler, generator=g, z_s=z)
            preds.append(pred.feats.numpy())
            targets.append(it["feats"])
        r2[mode] = _r2(np.concatenate(preds), np.concatenate(targets))
    return r2


@pytest.mark.slow
def test_homogenizer_learns_to_read_zs(one_thread, tmp_path) -> None:  # noqa: ANN001
    r2 = homogenizer_r2(tmp_path / "lh")
    assert r2["real"] > 0.5, r2
    assert r2["shuffled"] < 0.0 and r2["zero"] < 0.0, r2


def _z_swapped_within_cells(coords: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` with the rows of voxel pairs sharing a 2³ cell swapped (every such pair once)."""
    out = z.copy()
    cells: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(coords.tolist()):
        cells.setdefault(tuple(v // 2 for v in c), []).append(i)
    for members in cells.values():
        for a, b in zip(members[0::2], members[1::2]):
            out[[a, b]] = z[[b, a]]
    return out


@pytest.mark.parametrize("io_blocks", [1, 2])
def test_single_io_block_flow_cannot_tell_voxels_of_a_cell_apart(io_blocks: int) -> None:
    """With one I/O res block (``stage1_flow.json``) the input is mean-pooled over 2³ cells first:
    swapping ``Z_s`` between voxels of a cell changes no output; a second, full-resolution block
    makes every voxel's own ``Z_s`` reach its output."""
    cfg = Stage1Config.from_file(IO1_CONFIG)
    cfg.flow = {**cfg.flow, "num_io_res_blocks": io_blocks}
    torch.manual_seed(0)
    base = build_base_flow(cfg)
    homog = build_homogenizer(cfg, base, LH_CHANNELS)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a homogenizer that reads Z_s (trained weights are nonzero everywhere)
        for p in homog.flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ((coords, z),) = _voxel_sets(3, 1, n=300, side=8)
    swapped = _z_swapped_within_cells(coords, z)
    assert not np.array_equal(swapped, z)
    c = torch.from_numpy(np.concatenate([np.zeros((len(coords), 1), np.int32), coords], 1))
    x = SparseTensor(torch.randn(len(coords), LH_CHANNELS, generator=g), c)
    cond = homog.encoder.encode(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    t = torch.tensor([500.0])
    with torch.no_grad():
        out = [homog.flow(x, t, cond, z_s=x.replace(torch.from_numpy(zz))).feats for zz in (z, swapped)]
    if io_blocks == 1:
        torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-5)
    else:
        assert (out[0] - out[1]).abs().max() > 1e-2
