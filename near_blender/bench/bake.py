"""``near bench bake``: PBR textures baked from a NeAR asset onto its mesh (issue 20).

Runs ``operators/demo/bench_bake.py`` in Blender on the demo asset (``near demo``'s held-out
procedural asset, imported from its input image by stage 1): Object > NeAR > Bake PBR to Mesh at
512² and 1024², the baked mesh rendered by Cycles under a studio HDRI beside NeAR's F12 of the
asset and Cycles' render of the mesh with its true material, from ``near demo``'s two views. PSNR
of the AgX images over the object's pixels (either render's depth inside the clip range), as
``near demo`` scores NeAR against EEVEE.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .engine import run_blender_script, with_default_model


def object_psnr(folder: Path, a: dict[str, Any], b: dict[str, Any], far: float) -> float:
    """PSNR (dB) of two renders' AgX PNGs over the pixels either covers (``near demo``'s mask)."""
    from ..commands.demo import _object_mask, _png

    x, y = _png(folder / a["png"]), _png(folder / b["png"])
    mask = _object_mask(folder, a["exr"], b["exr"], far)
    mse = float(((x - y) ** 2)[mask].mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def measure(model: Path, sizes: list[int], resolution: int, samples: int, hdri: str) -> dict[str, Any]:
    """Run the Blender side, then score its renders (while they exist)."""
    with tempfile.TemporaryDirectory(prefix="near-bench-bake-") as tmp:
        d = run_blender_script("bench_bake", ["--model", str(model), "--sizes", *map(str, sizes), "--resolution",
                                              str(resolution), "--samples", str(samples), "--hdri", hdri,
                                              "--out", tmp])  # fmt: skip
        by = {(r["name"], r["view"]): r for r in d["renders"]}
        far = d["clip_end"]
        d["psnr"] = {
            f"{x}|{y}|{v}": object_psnr(Path(tmp), by[(x, v)], by[(y, v)], far)
            for v in d["views"]
            for x, y in [(f"baked{s}", "near") for s in sizes]
            + [("truth", "near")]
            + [(f"baked{s}", "truth") for s in sizes]
        }
    return d


def run(quick: bool = False) -> dict[str, Any]:
    sizes, resolution, samples = ([64, 128], 64, 4) if quick else ([512, 1024], 256, 32)
    hdri = "courtyard"
    d, model_desc, load_before, load_after = with_default_model(
        lambda model: measure(model, sizes, resolution, samples, hdri)
    )
    ps, views = d["psnr"], d["views"]
    times = {b["size"]: b["seconds"] for b in d["bakes"]}
    rows = []
    for s in sizes:
        vs_near = [ps[f"baked{s}|near|{v}"] for v in views]
        vs_truth = [ps[f"baked{s}|truth|{v}"] for v in views]
        rows.append([f"{s}²", round(times[s], 1), *[round(x, 2) for x in vs_near], round(float(np.mean(vs_near)), 2),
                     round(float(np.mean(vs_truth)), 2)])  # fmt: skip
    truth = [ps[f"truth|near|{v}"] for v in views]
    rows.append(
        [
            "(the mesh's true material)",
            "-",
            *[round(x, 2) for x in truth],
            round(float(np.mean(truth)), 2),
            "-",
        ]
    )
    best = max(sizes, key=lambda s: float(np.mean([ps[f"baked{s}|near|{v}"] for v in views])))
    summary = [
        f"Model: {model_desc}; the demo asset {d['asset_id']} ({d['voxels']} voxels, a {d['faces']}-face mesh), "
        f"imported from its {resolution}² input image. Renders at {resolution}² under the '{hdri}' HDRI from near "
        f"demo's views; Cycles CPU, {samples} samples; Blender {d['blender']} (bpy module).",
        f"The baked mesh in Cycles against NeAR's F12: {float(np.mean([ps[f'baked{best}|near|{v}'] for v in views])):.2f} dB "
        f"at {best}² (object pixels, AgX); the mesh with its true material scores {float(np.mean(truth)):.2f} dB "
        "against NeAR, i.e. how far NeAR itself is from the object.",
        "Bake time: the whole operator (Smart UV Project, decoding, texel sampling, gap filling, images, material) "
        + ", ".join(f"{times[s]:.1f} s at {s}²" for s in sizes)
        + ".",
        f"2 shared CPU cores; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
    ]
    return {
        "title": "Bake PBR to Mesh: Cycles render of the baked textures against NeAR",
        "summary": summary,
        "tables": [{"name": "PSNR (dB, object pixels, AgX) and bake time",
                    "columns": ["textures", "bake s", *[f"vs NeAR, {v}" for v in views], "vs NeAR, mean",
                                "vs true material, mean"],
                    "rows": rows}],
        "meta": {"quick": quick, "model": model_desc, "raw": d,
                 "command": "python -m near_blender.cli bench bake --out benchmarks" + (" --quick" if quick else "")},
    }  # fmt: skip
