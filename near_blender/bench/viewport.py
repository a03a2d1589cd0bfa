"""``near bench viewport``: how long Blender's main thread is held by the rendered viewport.

Runs ``operators/demo/bench_viewport.py`` in Blender (binary or bpy module): the bundled model's
asset of a procedural mesh under a studio HDRI, a simulated 1280x720 viewport region through the
camera, the camera orbiting 5 degrees per step. For the worker viewport (callbacks snapshot, a
worker renders a coarse pass then the Viewport Resolution) and, in the same process on the same
kind of views, the previous synchronous viewport (the frame rendered inside ``view_draw``): the time
in the main-thread callbacks per call (median, worst) and from a camera change to the first and to
the final frame.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .engine import run_blender_script, with_default_model


def measure(width: int, height: int, steps: int, model: Path) -> dict[str, Any]:
    return run_blender_script("bench_viewport", ["--model", str(model), "--width", str(width), "--height",
                                                 str(height), "--steps", str(steps)])  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    width, height = (320, 180) if quick else (1280, 720)
    steps = 2 if quick else 5
    data, model_desc, load_before, load_after = with_default_model(
        lambda model: measure(width, height, steps, model)
    )
    w, s = data["worker"], data["sync"]
    med, worst = statistics.median, max
    rows = [
        ["worker (this viewport)", med(w["callback_ms"]), worst(w["callback_ms"]), len(w["callback_ms"]),
         med(w["first_frame_s"]), med(w["final_frame_s"])],
        ["synchronous (previous viewport)", med(s["callback_ms"]), worst(s["callback_ms"]), len(s["callback_ms"]),
         med(s["final_frame_s"]), med(s["final_frame_s"])],
    ]  # fmt: skip
    scale, coarse = data["scale"], data["coarse_divisor"]
    ratio = med(s["callback_ms"]) / med(w["callback_ms"])
    summary = [
        f"Model: {model_desc}. Asset: a textured subdivided Suzanne, {data['voxels']} voxels. Region "
        f"{width}x{height} through the scene camera, Viewport Resolution 1/{scale} (final pass "
        f"{width // scale}x{height // scale}), coarse pass 1/{coarse} ({width // coarse}x{height // coarse}); "
        f"camera orbits 5 degrees per change, {steps} changes per path; Blender {data['blender']} (bpy module).",
        f"Main thread: a view_update + view_draw call takes {med(w['callback_ms']):.2f} ms at the median and "
        f"{worst(w['callback_ms']):.1f} ms at the worst with the worker, against {med(s['callback_ms']):.0f} ms "
        f"(the whole render) in the synchronous viewport: {ratio:.0f}x less time during which Blender cannot "
        "redraw or take input.",
        f"From a camera change: the first (coarse) frame after {med(w['first_frame_s']) * 1e3:.0f} ms, the final "
        f"frame after {med(w['final_frame_s']) * 1e3:.0f} ms (median), against {med(s['final_frame_s']) * 1e3:.0f} ms "
        "for the synchronous viewport's only frame. Both passes share the networks' run (tokenizer after a "
        "camera rotation, decoders); the final frame comes later than the synchronous one by the coarse "
        "pass's rasterization, whose cost is mostly per Gaussian, not per pixel.",
        f"2 shared CPU cores; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
    ]
    if quick:
        summary.append("Quick run: a 320x180 region and 2 camera changes (smoke test).")
    return {
        "title": "Rendered viewport: main-thread time and refinement latency (worker vs synchronous)",
        "summary": summary,
        "tables": [
            {
                "name": "Per camera change",
                "columns": ["path", "callback median ms", "callback worst ms", "callbacks timed",
                            "to first frame s", "to final frame s"],  # fmt: skip
                "rows": rows,
            }
        ],
        "meta": {"quick": quick, "model": model_desc, "region": [width, height], "voxels": data["voxels"],
                 "worker_counters": w["counters"], "first_frame_s": w["first_frame_s"],
                 "final_frame_s": w["final_frame_s"], "sync_frame_s": s["final_frame_s"],
                 "command": "python -m near_blender.cli bench viewport --out benchmarks" + (" --quick" if quick else "")},
    }  # fmt: skip
