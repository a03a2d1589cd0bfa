"""``near bench datagen``: seconds per view of the training-data renders, EEVEE Next and Cycles.

Runs ``operators/datagen/bench_renders.py`` in Blender (binary or bpy module, like ``near datagen``)
once per engine: per view, the generator's real path (one render with every pass, converted to the
view file with the shadow pass) against a one-render-per-pass baseline (7 renders: Combined, Depth,
Normal, base colour / roughness / metallic AOVs, diffuse light), same camera and HDRI lighting.
Also times a whole ``near datagen --preset tiny`` asset (set-up, voxels, SLATs included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import NearError


def _script() -> Path:
    from ..utils.blender_job import extension_script

    return extension_script("operators/datagen/bench_renders.py")


def _engine_rows(engine: str, resolutions: list[int], views: int) -> list[dict[str, Any]]:
    from ..utils.blender_job import blender_command, find_blender

    prefix = find_blender(None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = [
            "--engine",
            engine,
            "--resolutions",
            *map(str, resolutions),
            "--views",
            str(views),
            "--json",
            str(out),
        ]
        cmd = blender_command(prefix, _script(), args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0 or not out.exists():
            raise NearError(
                f"bench_renders.py failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            )
        return json.loads(out.read_text())["rows"]


def _end_to_end(resolution: int) -> dict[str, Any]:
    """A whole tiny-preset asset through ``near datagen`` with Cycles."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "near_blender.cli", "datagen", "--out", tmp, "--procedural", "1", "--preset",
               "tiny", "--engine", "cycles", "--resolution", str(resolution), "--progress", "none"]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise NearError(f"near datagen failed:\n{r.stderr[-2000:]}")
        entry = next(
            json.loads(x) for x in (Path(tmp) / "manifest.jsonl").read_text().splitlines() if '"asset"' in x
        )
        return {"renders": entry["renders"], "asset_s": entry["run"]["seconds"], "process_s": wall}


def run(quick: bool = False) -> dict[str, Any]:
    resolutions = [64, 128] if quick else [128, 512]
    views = 1 if quick else 2
    load_before = os.getloadavg()
    rows = []
    for engine in ("cycles", "eevee"):
        rows += _engine_rows(engine, resolutions, views)
    e2e = _end_to_end(64 if quick else 128)
    load_after = os.getloadavg()
    table = [
        [r["engine"], f"{r['resolution']}²", r["samples"], r["s_per_view"], r["baseline_s_per_view"],
         r["baseline_renders"], r["speedup"], r["warmup_s"]]
        for r in rows
    ]  # fmt: skip
    summary = [
        "One render per view and lighting yields every pass (Combined RGBA, depth, normal, base colour / "
        "roughness / metallic AOVs, diffuse light for the shadow pass); 's/view' includes converting "
        "Blender's multi-part EXR into the view file and computing the shadow pass.",
        "Baseline: the same view rendered once per pass (7 renders, each writing its file); switching the "
        "enabled pass also makes EEVEE recompile the materials, which is part of its larger ratio.",
        f"Samples are the tiny preset's (EEVEE {rows[-1]['samples']}, Cycles {rows[0]['samples']}); "
        "EEVEE runs on CPU through software OpenGL here, its first frame compiles shaders (warm-up column).",
        f"Whole asset, `near datagen --preset tiny --engine cycles` at {64 if quick else 128}²: "
        f"{e2e['renders']} renders in {e2e['asset_s']:.1f} s = {e2e['asset_s'] / e2e['renders']:.2f} s/view "
        f"including import, voxelization and SLAT files ({e2e['process_s']:.1f} s with process start-up).",
        "CPU contention: 2 shared cores (other jobs ran on this machine); 1-min load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after. Treat absolute times as noisy; the ratios "
        "are measured back to back in one process.",
    ]
    return {
        "title": "Training-data generation (near datagen): seconds per view",
        "summary": summary,
        "tables": [
            {
                "name": "Per view (relit view: HDRI lighting, all G-buffers + shadow)",
                "columns": [
                    "engine",
                    "size",
                    "samples",
                    "s/view (one render)",
                    "s/view (one render per pass)",
                    "renders in baseline",
                    "speed-up",
                    "first frame s",
                ],  # fmt: skip
                "rows": table,
            }
        ],
        "meta": {"quick": quick, "views_timed": views, "baseline_views_timed": 1},
    }
