"""Does stage 1 read Z_s? Stage-1 output vs the ground-truth LH-SLAT with the real, an all-zero and a
voxel-shuffled projected Z_s (for models with ``zs_source: "projection"``).

For each asset (the held-out split, then the first training assets) stage 1 runs on input view 0
with the same seed three times; the report is the mean L1 (stage-2 feature units) on the voxels
shared by the geometry prior and the LH-SLAT, split into the colour (0-2), normal (3-5) and
base-colour (8-10) channels. A homogenizer that uses Z_s is clearly better with the real one.

Usage: ``python tools/stage1_zs_check.py --model PIPELINE [--data data/default] [--train 5]``
(~2 min for the default data on 2 cores).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from near_blender.data.dataset import NearDataset
from near_blender.pipeline import NearPipeline

MODES = ("real", "zero", "shuffled")


def _errors(pipe: NearPipeline, ds: NearDataset, asset_id: str) -> dict[str, np.ndarray]:
    rec = ds.views(asset_id, "inputs")[0]
    rgba = ds.read(rec)["rgba"]
    prior = ds.prior_coords(asset_id)
    gc, gf = ds.slat_features(asset_id, uses_bc_slat(pipe))
    index = {tuple(c): i for i, c in enumerate(gc.tolist())}
    idx = np.array([index.get(tuple(c), -1) for c in prior.tolist()])
    ok = idx >= 0
    out = {}
    for mode in MODES:
        _MODE["mode"] = mode
        f = pipe.image_to_slat(rgba, prior, seed=0, camera=(rec.camera.viewmat, rec.camera.K))
        out[mode] = np.abs(f[ok] - gf[idx[ok]]).mean(0)
    return out


def uses_bc_slat(pipe: NearPipeline) -> bool:
    return bool((pipe.args.get("stage2") or {}).get("use_bc_slat"))


_MODE = {"mode": "real"}


def _patch() -> None:
    real = NearPipeline._projected_zs

    def projected(image_rgba: Any, coords: Any, camera: Any, s1: dict[str, Any]) -> np.ndarray:
        z = real(image_rgba, coords, camera, s1)
        if _MODE["mode"] == "zero":
            return np.zeros_like(z)
        if _MODE["mode"] == "shuffled":
            return z[np.random.default_rng(0).permutation(len(z))]
        return z

    NearPipeline._projected_zs = staticmethod(projected)  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/default")
    ap.add_argument("--train", type=int, default=5, help="training assets to check too")
    args = ap.parse_args()
    pipe = NearPipeline.from_pretrained(args.model)
    if pipe.stage1_method == "delight":
        raise SystemExit(
            "This pipeline's stage 1 is the delighting estimate (no Z_s): its error against the ground "
            "truth, beside the raw projection's and a constant colour's, is in the report of "
            "`near train stage1-delight` (runs/default/stage1_delight/report.json)."
        )
    if not pipe.needs_input_camera:
        raise SystemExit(
            "This pipeline samples Z_s with its base flow (zs_source: base_flow); nothing to check."
        )
    _patch()
    ds = NearDataset(args.data)
    train, held = ds.split()
    for name, ids in (("held-out", held), ("training", train[: args.train])):
        per = [_errors(pipe, ds, a) for a in ids]
        for mode in MODES:
            v = np.mean([p[mode] for p in per], axis=0)
            bc = f" base colour {v[8:11].mean():.3f}" if len(v) >= 11 else ""
            print(
                f"{name:9s} {mode:8s} L1 colour {v[0:3].mean():.3f} normal {v[3:6].mean():.3f}{bc} all {v.mean():.3f}"
            )


if __name__ == "__main__":
    main()
