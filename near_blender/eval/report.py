"""Outputs of ``near eval``: metrics.json, per_asset.jsonl, rows.jsonl, report.md, contact sheets.

* ``metrics.json``: ``{task: {method: {"psnr", "ssim", "lpips", "n"}}}``, means over every
  evaluated image of the task (``lpips`` null without its weights); methods a task does not run
  are absent.
* ``per_asset.jsonl``: one line per (asset, task, method) with that asset's means.
* ``rows.jsonl``: one line per evaluated image and method (target file, light, scores).
* ``run.json``: the settings, the asset list and notes.
* ``report.md``: one table per metric, rows = tasks, columns = methods.
* ``<task>.png``: a contact sheet per task: a label strip, then one row per asset (the first
  ``sheet_rows``), columns input, GT, ours, lambertian, baked, delit (grey where a method does not run),
  each cell ``sheet_cell`` px square (nearest-neighbour resize of the display images).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..utils.sheet import contact_sheet as grid_sheet
from .results import METHODS, SHEET_COLUMNS, TASK_METHODS, AssetResult, EvalConfig, mean_or_none
from .scoring import lpips_note

METRICS = ("psnr", "ssim", "lpips")
LABEL_HEIGHT = 14
NA_GREY = 48


def aggregate(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    """Group rows by ``keys`` -> mean of each metric (None-aware) and the count ``n``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return {
        k: {**{m: mean_or_none([r[m] for r in g]) for m in METRICS}, "n": len(g)} for k, g in groups.items()
    }


def metrics_table(rows: list[dict[str, Any]], tasks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    agg = aggregate(rows, ("task", "method"))
    out: dict[str, dict[str, Any]] = {}
    for t in tasks:
        out[t] = {m: agg[(t, m)] for m in METHODS if (t, m) in agg}
    return out


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" if metric == "psnr" else f"{v:.4f}"


def report_markdown(table: dict[str, dict[str, Any]], rows: list[dict[str, Any]], settings: dict[str, Any],
                    notes: list[str]) -> str:  # fmt: skip
    """The markdown report: one table per metric (rows = tasks, columns = methods)."""
    methods = [m for m in METHODS if m in settings["methods"]]
    arrows = {"psnr": "PSNR (dB, higher is better)", "ssim": "SSIM (higher is better)",
              "lpips": "LPIPS (lower is better)"}  # fmt: skip
    lines = [
        "# near eval",
        "",
        f"Model: `{settings.get('model')}`  ",
        f"Data: `{settings.get('data')}` ({len(settings['assets'])} asset(s), split `{settings.get('split')}`, "
        f"{settings.get('inputs')} input view(s) per asset)  ",
        "Images: premultiplied HDR composited over black, AgX (Blender), full frame.",
        "",
    ]
    for metric in METRICS:
        lines += [f"## {arrows[metric]}", "", "| task | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]  # fmt: skip
        for task, by_method in table.items():
            cells = []
            for m in methods:
                if m not in TASK_METHODS[task]:
                    cells.append("-")
                elif m in by_method:
                    cells.append(f"{_fmt(by_method[m][metric], metric)} (n={by_method[m]['n']})")
                else:
                    cells.append("n/a")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append("")
    approx = sorted({(r["asset"], r["target"]) for r in rows if r.get("approx_light")})
    if approx:
        lines += [f"Random-lit reconstruction: {len(approx)} input(s) lit by area lights were re-lit with the "
                  "lights as a distant environment map (approximation, see near_blender/eval/lights.py).", ""]  # fmt: skip
    if "baked" in methods:
        engine = settings.get("baked_engine", "dataset")
        engine = "the dataset's own engine and settings" if engine == "dataset" else engine
        lines += ["Baked baseline: the asset with the input image projected from the input camera as its base "
                  "colour (Principled BSDF defaults otherwise), rendered by Blender under the target light with "
                  f"{engine} (near_blender/eval/baked.py).", ""]  # fmt: skip
    if "delit" in methods:
        lines += ["Delit baseline: the input image delit on the geometry prior (its lighting fitted and divided "
                  "out, near_blender/data/delighting.py), shaded as a Lambertian surface under the target light "
                  "with the prior's normals (near_blender/eval/baselines.py).", ""]  # fmt: skip
    lines += [f"Note: {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def _to_uint8(img: np.ndarray, cell: int) -> Any:
    from PIL import Image

    a = np.clip(np.asarray(img, np.float32)[..., :3], 0.0, 1.0)
    im = Image.fromarray((a * 255.0 + 0.5).astype(np.uint8), "RGB")
    return im.resize((cell, cell), Image.NEAREST)


def contact_sheet(examples: list[dict[str, np.ndarray]], cell: int) -> Any:
    """A PIL image: label strip + one row per example, columns :data:`SHEET_COLUMNS` (n/a: grey)."""
    tiles = [[_to_uint8(ex[c], cell) if c in ex else None for c in SHEET_COLUMNS] for ex in examples]
    return grid_sheet(tiles, cell, SHEET_COLUMNS, label_height=LABEL_HEIGHT, missing_grey=NA_GREY)


def write_outputs(out: Path, cfg: EvalConfig, ids: list[str], results: dict[str, AssetResult],
                  settings: dict[str, Any], notes: list[str]) -> dict[str, Any]:  # fmt: skip
    """Write every output file (atomically) and return the ``metrics.json`` content."""
    rows = [r for a in ids for r in results[a].rows]
    table = metrics_table(rows, cfg.tasks)
    note = lpips_note()
    all_notes = ([note] if note else []) + list(notes)
    atomic_write_json(out / "metrics.json", table)
    per_asset = aggregate(rows, ("asset", "task", "method"))
    atomic_write_text(
        out / "per_asset.jsonl",
        "".join(
            json.dumps({"asset": a, "task": t, "method": m, **v}) + "\n" for (a, t, m), v in per_asset.items()
        ),
    )
    atomic_write_text(out / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(out / "run.json", {"settings": settings, "notes": all_notes})
    atomic_write_text(out / "report.md", report_markdown(table, rows, settings, all_notes))
    for task in cfg.tasks:
        exs = [results[a].examples[task] for a in ids if task in results[a].examples][: cfg.sheet_rows]
        buf = io.BytesIO()
        contact_sheet(exs, cfg.sheet_cell).save(buf, format="PNG")
        atomic_write_bytes(out / f"{task}.png", buf.getvalue())
    return table
