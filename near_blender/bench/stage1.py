"""Stage-1 benchmark: importing an image onto a geometry prior of 10k / 40k voxels.

Times the bundled model's stage 1 (``delight``: prior geometry, delighting, calibration;
:meth:`NearPipeline.image_to_slat`) against the flow stage 1 the bundled model shipped before
(base flow + LoRA homogenizer, 25 Euler steps each, the ``configs/experiments/stage1_flow.json`` widths with
random weights: the time does not depend on the weights), in the same process on the same voxels.
The voxels are a thick sphere shell; the image is a 512² render of it (voxel colours splatted with
a depth test) seen from a camera at distance 2.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import torch

from .sparse import shell_voxels

SIZES = (10_000, 40_000)
IMAGE = 512


def shell_image(coords: np.ndarray, size: int = IMAGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(premultiplied rgba [size, size, 4], viewmat, K): the voxels as coloured squares, lit from the
    upper left, seen from (2, 0.4, 0.6)."""
    from ..data.image_projection import front_depth
    from ..render.camera import intrinsics_from_fov, look_at

    V = np.asarray(look_at(np.array([2.0, 0.4, 0.6])), np.float64)
    K = np.asarray(intrinsics_from_fov(40.0, size, size), np.float64)
    p = (coords + 0.5) / 64 - 0.5
    cam = p @ V[:3, :3].T + V[:3, 3]
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    v = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]
    px, py = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    zbuf = front_depth(px, py, cam[:, 2], inside, K[0, 0] / 64, size, size).reshape(size, size)
    n = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-9)
    albedo = np.where((np.floor(p[:, 2] * 20) % 2 == 0)[:, None], [0.7, 0.2, 0.1], [0.2, 0.4, 0.7])
    rgb = albedo * (0.2 + np.clip(n @ np.array([0.3, 0.5, 0.8]), 0, None))[:, None]
    # each pixel takes the colour of the front-most voxel centre nearest in depth (nearest splat)
    img = np.zeros((size, size, 4), np.float32)
    ys, xs = np.nonzero(np.isfinite(zbuf))
    order = np.argsort(cam[inside, 2])[::-1]  # far to near: the nearest voxel writes last
    idx = np.nonzero(inside)[0][order]
    r = int(np.ceil(0.866 * K[0, 0] / 64 / cam[:, 2].min()))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            qx, qy = px[idx] + dx, py[idx] + dy
            ok = (qx >= 0) & (qx < size) & (qy >= 0) & (qy < size)
            img[qy[ok], qx[ok], :3] = rgb[idx[ok]]
            img[qy[ok], qx[ok], 3] = 1.0
    img[zbuf == np.inf] = 0.0
    return img, V, K


def _flow_stage1() -> tuple[Any, Any]:
    """The previous bundled stage 1's two flows (random weights): base flow (image -> 8-channel
    ``Z_s``) and the homogenizer widened from it ((x_t, ``Z_s``) -> 16-channel LH-SLAT)."""
    from ..models.homogenizer import from_base_flow
    from ..models.slat_flow import SLatFlowModel

    kw: dict[str, Any] = dict(
        resolution=64, in_channels=8, out_channels=8, model_channels=32, cond_channels=64, num_blocks=2,
        num_heads=2, num_io_res_blocks=1, io_block_channels=[16], qk_rms_norm=True,
    )  # fmt: skip
    base = SLatFlowModel(**kw).eval()
    homog = from_base_flow(SLatFlowModel(**{**kw, "in_channels": 16, "out_channels": 16}), shaded_channels=8)
    return base, homog.eval()


def run(quick: bool = False) -> dict[str, Any]:
    from ..models.hub import bundled_model_folder
    from ..models.sampler import FlowEulerSampler
    from ..pipeline import NearPipeline
    from ..sparse import SparseTensor
    from . import timeit

    pipe = NearPipeline.from_pretrained(bundled_model_folder())
    rows = []
    sizes = (5_000,) if quick else SIZES
    a = torch.randn(1024, 1024)
    matmul = timeit(lambda: a @ a, repeat=5)
    for n in sizes:
        coords = shell_voxels(n).numpy().astype(np.int64)
        rgba, V, K = shell_image(coords, 128 if quick else IMAGE)
        pipe.__dict__.pop("_prior_geometry", None)
        t0 = time.perf_counter()
        pipe.image_to_slat(rgba, coords, camera=(V, K))  # first import: the prior's geometry too
        first = time.perf_counter() - t0
        again = timeit(partial(pipe.image_to_slat, rgba, coords, camera=(V, K)), repeat=2, warmup=0)
        row = {"voxels": n, "delight_first_s": round(first, 2), "delight_again_s": round(again, 2)}
        if not quick:
            base, homog = _flow_stage1()
            sampler = FlowEulerSampler(steps=25, cfg_strength=0.0)
            vox = torch.from_numpy(np.concatenate([np.zeros((n, 1), np.int64), coords], 1)).int()
            cond = torch.randn(1, 64, 64)
            t0 = time.perf_counter()
            with torch.no_grad():
                x = SparseTensor(torch.randn(n, 8), vox)
                z_s = sampler.sample(base, x, cond)
                sampler.sample(homog, SparseTensor(torch.randn(n, 16), vox), cond, z_s=z_s)  # [x_t, Z_s]
            flow = time.perf_counter() - t0
            row["flow_s"] = round(flow, 2)
            row["flow_over_delight"] = round(flow / first, 1)
        row["delight_over_matmul"] = round(first / matmul, 0)
        rows.append(row)
    cols = list(rows[0])
    return {
        "title": "Stage 1: image + geometry prior -> LH-SLAT",
        "summary": [
            f"{r['voxels']} voxels: delight stage 1 {r['delight_first_s']} s (first import of a prior; "
            f"{r['delight_again_s']} s for another image on the same prior)"
            + (f", flow stage 1 {r['flow_s']} s ({r['flow_over_delight']}x)" if "flow_s" in r else "")
            for r in rows
        ]
        + [f"1024² fp32 matmul baseline: {matmul * 1000:.1f} ms"],
        "tables": [
            {"name": "stage 1 time", "columns": cols, "rows": [[r.get(c) for c in cols] for r in rows]}
        ],
    }
