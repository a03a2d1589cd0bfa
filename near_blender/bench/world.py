"""``near bench world``: the cost of baking a world NeAR cannot read exactly (a Sky Texture).

Runs ``operators/demo/bench_world.py`` in Blender: the bake alone at the default size (in this
Blender, and in a separate Blender process as F12 does it), the first F12 under the sky (bake
included) and the cached ones, beside F12s under a plain HDRI (read exactly) in the same process.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .engine import run_blender_script, with_default_model


def measure(size: int, frames: int, model: Path) -> dict[str, Any]:
    return run_blender_script(
        "bench_world", ["--model", str(model), "--size", str(size), "--frames", str(frames)]
    )


def run(quick: bool = False) -> dict[str, Any]:
    size, frames = (64, 1) if quick else (256, 3)
    d, model_desc, load_before, load_after = with_default_model(lambda model: measure(size, frames, model))
    med = statistics.median
    w, h = d["bake_size"]
    rows = [
        ["bake alone, in this Blender", d["bake_here_s"]],
        ["bake alone, in a separate Blender process (as during F12)", d["bake_process_s"]],
        ["F12 under the Sky Texture, first (bake included)", d["sky_first_f12_s"]],
        ["F12 under the Sky Texture, cached (median)", med(d["sky_cached_f12_s"])],
        ["F12 under a plain HDRI, read exactly (median, baseline)", med(d["hdri_f12_s"])],
    ]
    summary = [
        f"Model: {model_desc}; a {d['voxels']}-voxel asset at {size}². Bake: Cycles CPU, {w}x{h} equirectangular, "
        f"{d['bake_samples']} samples; Blender {d['blender']} (bpy module).",
        f"A Sky Texture world costs one bake per change of the world: the first F12 takes "
        f"{d['sky_first_f12_s']:.2f} s against {med(d['sky_cached_f12_s']):.2f} s once cached "
        f"({d['bakes_during_f12']} bake during {frames + 1} F12s), and a cached F12 costs what a plain HDRI's "
        f"does ({med(d['hdri_f12_s']):.2f} s).",
        f"During F12 the bake runs in a separate Blender process ({d['bake_process_s']:.2f} s, mostly its start) "
        f"because a render cannot start another; outside a render (the viewport) it takes {d['bake_here_s']:.2f} s.",
        f"2 shared CPU cores; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
    ]
    return {
        "title": "World baking: a world NeAR cannot read exactly, baked with Cycles",
        "summary": summary,
        "tables": [{"name": "Seconds", "columns": ["what", "s"], "rows": rows}],
        "meta": {"quick": quick, "model": model_desc, "raw": d,
                 "command": "python -m near_blender.cli bench world --out benchmarks" + (" --quick" if quick else "")},
    }  # fmt: skip
