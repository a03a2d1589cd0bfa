"""``near eval``: the paper's four evaluation tasks (PSNR / SSIM / LPIPS) on a ``near datagen`` dataset.

::

    near eval --model PIPELINE --data DATASET --out RESULTS [--assets ID ...] [--split heldout|all]
              [--limit N] [--tasks ...] [--methods ours lambertian baked delit] [--inputs K] [--steps S]
              [--baked-engine dataset|eevee|cycles] [--blender PATH]

Writes ``RESULTS/metrics.json`` (``{task: {method: {psnr, ssim, lpips, n}}}``), ``per_asset.jsonl``,
``rows.jsonl``, ``report.md`` and one contact sheet ``RESULTS/<task>.png`` per task; see
:mod:`near_blender.eval.tasks` for what each task compares. The baked baseline renders in Blender
(the bpy module or a ``blender`` binary, as ``near datagen``), cached in ``RESULTS/baked/``.
Re-running with the same settings resumes (finished assets are kept); ``--no-resume`` starts over.
"""

from __future__ import annotations

import argparse
import json

from ..eval.tasks import METHODS, TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="pipeline folder (or Hub repo) with stage-1 and stage-2 models")
    parser.add_argument("--data", required=True, help="dataset folder made by `near datagen`")
    parser.add_argument("--out", required=True, help="results folder (created)")
    parser.add_argument(
        "--assets", nargs="*", default=None, metavar="ID", help="asset ids (default: the split)"
    )
    parser.add_argument("--split", choices=["heldout", "all"], default="heldout",
                        help="held-out assets of the dataset's deterministic split, or all")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N assets")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--inputs", type=int, default=1, metavar="K",
                        help="input views per asset used as the single image (default 1)")  # fmt: skip
    parser.add_argument(
        "--steps", type=int, default=None, help="stage-1 sampler steps (default: the model's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="stage-1 noise seed")
    parser.add_argument("--irradiance-height", type=int, default=32,
                        help="rows of the map the baselines integrate irradiance over")  # fmt: skip
    parser.add_argument("--baked-engine", choices=("dataset", "eevee", "cycles"), default="dataset",
                        help="engine of the baked baseline (a) renders (default: the dataset's own)")  # fmt: skip
    parser.add_argument("--blender", default=None, metavar="PATH",
                        help="Blender for the baked baseline (default: $BLENDER, blender on PATH, the bpy module)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda, ...)")
    parser.add_argument("--sheet-rows", type=int, default=4, help="assets per contact sheet")
    parser.add_argument("--sheet-cell", type=int, default=128, help="contact-sheet cell size (px)")
    parser.add_argument("--no-resume", action="store_true", help="recompute assets already evaluated")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..eval.tasks import EvalConfig, run_eval

    cfg = EvalConfig(
        data=args.data, out=args.out, model=args.model, assets=args.assets, split=args.split, limit=args.limit,
        tasks=tuple(args.tasks), methods=tuple(args.methods), inputs=args.inputs, steps=args.steps,
        seed=args.seed, irradiance_height=args.irradiance_height, device=args.device,
        baked_engine=args.baked_engine, blender=args.blender,
        resume=not args.no_resume, progress=not args.no_progress, sheet_rows=args.sheet_rows,
        sheet_cell=args.sheet_cell,
    )  # fmt: skip
    table = run_eval(cfg)
    print(json.dumps(table, indent=2))
    print(f"near eval: wrote {args.out}/metrics.json, report.md and {len(cfg.tasks)} contact sheet(s).")
    return 0
