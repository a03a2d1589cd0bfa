"""``near demo``: build the demo scene and render it with NeAR and with EEVEE Next (``make demo``).

::

    near demo [--out out/demo] [--resolution 256] [--eevee-samples 16] [--hdris A B C] [--blender PATH]

Blender (binary or the bpy module, like ``near datagen``) runs ``operators/demo/build_demo.py``: a
held-out procedural asset lit by random area lights gives the input image, its mesh the geometry
prior; stage 1 makes the NeAR asset; F12 under three studio HDRIs and two views with NeAR and EEVEE.
This command then compares them (PSNR / SSIM of the AgX images, whole frame and object pixels),
writes ``contact_sheet.png`` and ``metrics.json`` next to the renders and prints both engines' times.

Model: the bundled default (``near_blender/weights/near-default``); when it is not installed,
``$NEAR_MODEL``, else a tiny random pipeline, each with a loud warning (the images are then noise).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..utils.blender_job import (
    blender_command,
    extension_script,
    find_blender,
    run_logged,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--resolution", type=int, default=256, help="square render size (default 256)")
    parser.add_argument("--eevee-samples", type=int, default=16, help="EEVEE Next samples (default 16)")
    parser.add_argument(
        "--hdris", nargs="+", default=None, help="studio HDRIs (default courtyard sunset city)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blender", default=None, metavar="PATH", help="Blender executable (default: bpy module)"
    )
    parser.add_argument("--progress", choices=("bar", "none"), default="bar")


def script_path() -> Path:
    return extension_script("operators/demo/build_demo.py")


def choose_model(out: Path) -> tuple[Path, str, bool]:
    """(pipeline folder, description, is the real default model)."""
    from ..models.hub import bundled_model_folder

    bundled = bundled_model_folder()
    if (bundled / "pipeline.json").is_file():
        return bundled, f"bundled default model ({bundled})", True
    env = os.environ.get("NEAR_MODEL")
    if env:
        return Path(env), f"$NEAR_MODEL ({env}); the bundled default model is not installed", False
    from ..models.tiny_pipeline import build_tiny_pipeline

    folder = build_tiny_pipeline(out / "tiny-random-model")
    return folder, "TINY RANDOM pipeline (the bundled default model is not installed)", False


def _warn(text: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n{text}\n{bar}\n", file=sys.stderr, flush=True)


def run_blender(args: argparse.Namespace, out: Path, model: Path) -> None:
    prefix = find_blender(args.blender)
    forwarded = ["--out", str(out), "--model", str(model), "--resolution", str(args.resolution),
                 "--eevee-samples", str(args.eevee_samples), "--seed", str(args.seed)]  # fmt: skip
    if args.hdris:
        forwarded += ["--hdris", *args.hdris]
    cmd = blender_command(prefix, script_path(), forwarded)
    log_path = out / "demo.log"
    bar = None

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal bar
        if ev["event"] == "start" and args.progress == "bar":
            from tqdm import tqdm

            bar = tqdm(total=ev["renders"], unit="render", desc="near demo", dynamic_ncols=True)
        elif bar is not None and ev["event"] == "render":
            bar.update(ev["done"] - bar.n)
            bar.set_postfix_str(ev["name"])
        elif bar is not None and ev["event"] == "stage1":
            bar.set_postfix_str(f"stage 1 {ev['fraction'] * 100:.0f}%")

    run_logged(cmd, on_event, "near demo", log_path, lambda: bar and bar.close(), append=False)


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def _object_mask(out: Path, near_exr: str, eevee_exr: str, far: float) -> np.ndarray:
    """Pixels covered by the NeAR asset or the EEVEE mesh: a depth well inside the camera's clip
    range in either render (empty pixels have NeAR's 1e10 or EEVEE's clip-end depth)."""
    from ..render.exr import read_exr_channels

    masks = []
    for name in (near_exr, eevee_exr):
        ch = read_exr_channels(out / name)
        depth = next((v for k, v in ch.items() if k.endswith("Depth.Z")), None)
        if depth is not None:
            masks.append(depth < 0.5 * far)
    return np.logical_or.reduce(masks) if masks else np.zeros((1, 1), bool)


def compare(out: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """PSNR / SSIM of every NeAR render against its EEVEE reference (AgX PNGs in [0, 1])."""
    from ..train.metrics import mean_abs_laplacian, psnr, ssim

    by = {(r["engine"], r["hdri"], r["view"]): r for r in record["renders"]}
    rows = []
    for hdri in record["hdris"]:
        for view in record["views"]:
            n, e = by[("NEAR", hdri, view)], by[("BLENDER_EEVEE", hdri, view)]
            a, b = _png(out / n["png"]), _png(out / e["png"])
            mask = _object_mask(out, n["exr"], e["exr"], float(record.get("clip_end", 100.0)))
            obj = speckle = float("nan")
            if mask.shape == a.shape[:2] and mask.any():
                mse = float(((a - b) ** 2)[mask].mean())
                obj = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
                speckle = mean_abs_laplacian(a, mask) / max(mean_abs_laplacian(b, mask), 1e-9)
            rows.append({"hdri": hdri, "view": view, "psnr": psnr(a, b), "psnr_object": obj, "ssim": ssim(a, b),
                         "speckle": speckle,
                         "object_fraction": float(mask.mean()) if mask.shape == a.shape[:2] else 0.0,
                         "near_s": n["seconds"], "eevee_s": e["seconds"], "near_png": n["png"],
                         "eevee_png": e["png"]})  # fmt: skip
    return rows


def contact_sheet(out: Path, record: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """One row per HDRI: the input image, then NeAR | EEVEE for each view, with labels."""
    from PIL import Image

    from ..utils.sheet import contact_sheet as grid_sheet

    views, hdris, size = record["views"], record["hdris"], record["resolution"]
    pngs = {(r["hdri"], r["view"]): (r["near_png"], r["eevee_png"]) for r in rows}
    heads = ["input"] + [f"{eng} {v}" for v in views for eng in ("NeAR", "EEVEE")]
    inp = Image.open(out / record["input"]).convert("RGBA")
    backdrop = Image.new("RGBA", inp.size, (128, 128, 128, 255))
    inp = Image.alpha_composite(backdrop, inp).convert("RGB").resize((size, size))
    tiles = [
        [inp if r == 0 else None]
        + [
            Image.open(out / name).convert("RGB").resize((size, size))
            for v in views
            for name in pngs[(hdri, v)]
        ]
        for r, hdri in enumerate(hdris)
    ]
    sheet = grid_sheet(tiles, size, heads, label_height=16, header_y=2, row_labels=hdris, label_width=72,
                       background=(24, 24, 24))  # fmt: skip
    path = out / "contact_sheet.png"
    sheet.save(path)
    return path


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.resolution < 16:
        raise NearError("--resolution must be at least 16.")
    model, desc, real = choose_model(out)
    if not real:
        _warn(f"near demo: WARNING: using {desc}.\nIts renders are NOT what NeAR looks like; install the default "
              "model (make default-model) for a meaningful demo.")  # fmt: skip
    run_blender(args, out, model)
    record = json.loads((out / "demo.json").read_text())
    rows = compare(out, record)
    sheet = contact_sheet(out, record, rows)
    near_t = [r["near_s"] for r in rows]
    eevee_t = [r["eevee_s"] for r in rows]
    summary = {"model": desc, "default_model": real, "asset_id": record["asset_id"], "voxels": record["voxels"],
               "resolution": record["resolution"], "eevee_samples": record["eevee_samples"],
               "stage1_seconds": record["stage1_seconds"], "rows": rows,
               "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
               "mean_ssim": float(np.mean([r["ssim"] for r in rows])),
               "median_psnr_object": float(np.median([r["psnr_object"] for r in rows])),
               "worst_psnr_object": float(np.min([r["psnr_object"] for r in rows])),
               "max_speckle": float(np.max([r["speckle"] for r in rows])),
               "near_seconds_median": float(np.median(near_t)), "eevee_seconds_median": float(np.median(eevee_t)),
               "contact_sheet": sheet.name}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"near demo: {record['asset_id']} ({record['voxels']} voxels), model: {desc}")
    print(f"  stage 1 (import): {record['stage1_seconds']:.1f} s; renders at {record['resolution']}², "
          f"EEVEE {record['eevee_samples']} samples")  # fmt: skip
    print(
        f"  {'HDRI':<10} {'view':<6} {'PSNR dB':>8} {'obj PSNR':>8} {'SSIM':>6} {'speckle':>7} {'NeAR s':>7} "
        f"{'EEVEE s':>8}"
    )
    for r in rows:
        print(f"  {r['hdri']:<10} {r['view']:<6} {r['psnr']:8.2f} {r['psnr_object']:8.2f} {r['ssim']:6.3f} "
              f"{r['speckle']:7.2f} {r['near_s']:7.2f} {r['eevee_s']:8.2f}")  # fmt: skip
    print(
        f"  median render time: NeAR {summary['near_seconds_median']:.2f} s, EEVEE "
        f"{summary['eevee_seconds_median']:.2f} s (the first EEVEE frame includes shader compilation)"
    )
    print("  speckle: mean |Laplacian| of the object's AgX pixels, NeAR over EEVEE (1 = as smooth as EEVEE)")
    print(f"  wrote {out}/ (PNGs in AgX, EXR passes, {sheet.name}, metrics.json, demo.blend)")
    if not real:
        _warn(f"near demo: these numbers come from {desc}; they say nothing about NeAR's quality.")
    return 0
