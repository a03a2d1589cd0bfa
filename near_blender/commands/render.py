"""``near render``: render frames of a .blend with the NeAR engine (batch / animation), or an
LH-SLAT asset (.npz) without Blender.

::

    near render FILE.blend [--frames 1-4,7] [--out DIR] [--engine NEAR|eevee|cycles|SCENE]
                [--resolution WxH] [--model PATH] [--overwrite] [--blender PATH]
    near render ASSET.npz --env MAP.hdr|.exr --camera CAMERA.json [--strength S] [--rotation DEG]
                [--transparent] [--out DIR] [--model PATH] [--device auto|cpu|cuda]

The form follows the file's suffix. An ``.npz`` renders in this Python (:mod:`.render_asset`). For
a .blend, Blender does the work: this command runs the extension's ``engine/batch.py`` in a Blender
binary (``--blender``, ``$BLENDER`` or ``blender`` on PATH) or with this Python's ``bpy`` module, in one
subprocess for all frames (so the model and the NeAR caches are loaded once), and shows a progress
bar. Frames are written with the scene's output settings (multilayer EXR, PNG, ...) to its output
path or ``--out``; frames whose file exists are skipped (resume) unless ``--overwrite``. The same
frames render with ``blender -b FILE.blend -f N`` when the extension is installed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .. import NearError
from ..utils.blender_job import (
    blender_command,
    blender_failure,
    extension_script,
    find_blender,
    run_blender_events,
)
from ..utils.frames import parse_frames, parse_resolution
from . import render_asset

USAGE = """near render FILE.blend [--frames 1-4,7] [--out DIR] [--engine NEAR|eevee|cycles|SCENE]
                   [--resolution WxH] [--model PATH] [--overwrite] [--blender PATH]
       near render ASSET.npz --env MAP.hdr|.exr --camera CAMERA.json [--strength S] [--rotation DEG]
                   [--transparent] [--out DIR] [--model PATH] [--device auto|cpu|cuda]"""
DESCRIPTION = (
    "FILE.blend: render its frames with the NeAR engine (or another) in Blender, one subprocess for "
    "all frames, saved with the scene's output settings; existing frames are skipped (resume). "
    "ASSET.npz: render an LH-SLAT (as `near import-image` writes it) without Blender, as F12 would "
    "render it as a NeAR asset under that HDRI and camera: every pass as one multilayer EXR plus an "
    "AgX PNG, <asset>.exr and <asset>.png in --out (default: the asset's folder)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage, parser.description = USAGE, DESCRIPTION
    parser.add_argument(
        "file", metavar="FILE.blend|ASSET.npz", help="a .blend to render, or an LH-SLAT asset (.npz)"
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: the scene's output path; an .npz's folder)"
    )
    parser.add_argument(
        "--model", default=None, metavar="PATH", help="NeAR pipeline folder or Hub id ($NEAR_MODEL)"
    )
    parser.add_argument("--progress", choices=("bar", "none"), default="bar", help="progress display")
    g = parser.add_argument_group("rendering a .blend (in Blender)")
    g.add_argument("--frames", default=None, help="frames, e.g. 1-4,7 or 1-20:2 (default: the scene's range)")
    g.add_argument("--engine", default=None, help="NEAR (default), eevee, cycles, or SCENE (keep the file's)")
    g.add_argument("--resolution", default=None, metavar="WxH", help="override the render size")
    g.add_argument("--overwrite", action="store_true", help="re-render frames whose output exists")
    g.add_argument("--blender", default=None, metavar="PATH", help="Blender executable (default: bpy module)")
    render_asset.add_arguments(parser)


def script_path() -> Path:
    """The Blender-side script (in the extension's ``engine/``)."""
    return extension_script(
        "engine/batch.py", "With the extension installed in Blender, `blender -b FILE.blend -f N` also works."
    )


def check_args(args: argparse.Namespace) -> Path:
    """Fail fast, before Blender starts; returns the absolute .blend path."""
    blend = Path(args.file).expanduser().resolve()
    if not blend.is_file():
        raise NearError(f"No such .blend file: {blend}")
    if blend.suffix.lower() != ".blend":
        raise NearError(f"{blend.name} is not a .blend file.")
    asset_only = [f"--{o}" for o in render_asset.ASSET_OPTIONS if getattr(args, o, None) is not None]
    if asset_only:
        raise NearError(
            f"{', '.join(asset_only)} apply to an LH-SLAT .npz; a .blend renders with its own world and camera."
        )
    if args.frames:
        parse_frames(args.frames)
    if args.resolution:
        parse_resolution(args.resolution)
    return blend


def build_command(args: argparse.Namespace, blend: Path) -> list[str]:
    prefix = find_blender(args.blender)
    forwarded = [str(blend)]
    for opt in ("frames", "out", "engine", "resolution", "model"):
        v = getattr(args, opt)
        if v:
            if opt in ("out", "model") and os.path.exists(v):
                v = str(Path(v).resolve())
            forwarded += [f"--{opt}", str(v)]
    if args.overwrite:
        forwarded.append("--overwrite")
    forwarded += ["--progress", "json"]
    return blender_command(prefix, script_path(), forwarded)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser().resolve()
    if path.suffix.lower() == ".npz":
        return render_asset.run(args, path)
    if path.suffix.lower() != ".blend":
        raise NearError(
            f"{path.name}: give a .blend file, or an LH-SLAT asset (.npz) with --env and --camera."
        )
    blend = check_args(args)
    cmd = build_command(args, blend)
    summary: dict[str, Any] = {}
    bar = None

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal bar, summary
        kind = ev.get("event")
        if kind == "start":
            print(f"near render: {blend.name}: {ev['frames']} frame(s), {ev['frames'] - ev['todo']} already "
                  f"done, engine {ev['engine']}, {len(ev['assets'])} NeAR asset(s) -> {ev['output']}",
                  flush=True)  # fmt: skip
            if args.progress == "bar":
                from tqdm import tqdm

                bar = tqdm(total=ev["frames"], unit="frame", desc="near render", dynamic_ncols=True)
        elif kind == "frame" and bar is not None:
            bar.update(ev["done"] - bar.n)
            bar.set_postfix_str(f"frame {ev['frame']} {ev['status']}")
        elif kind == "end":
            summary = ev

    try:
        code, tail = run_blender_events(cmd, on_event)
    finally:
        if bar is not None:
            bar.close()
    if code != 0:
        hint = ""
        if any("bundled default NeAR model is missing" in t for t in tail):
            hint = " For `near render`, pass --model PATH (a pipeline folder or Hub id) or set $NEAR_MODEL."
        raise blender_failure("near render", code, tail, hint=hint)
    cache = summary.get("cache") or {}
    line = (f"near render: {summary.get('done', 0)} rendered, {summary.get('skipped', 0)} skipped (already there; "
            f"--overwrite redoes them) in {summary.get('seconds', 0.0):.1f} s")  # fmt: skip
    if cache:
        line += (f"; NeAR caches: {cache.get('asset_misses', 0)} asset encode(s), "
                 f"{cache.get('lighting_misses', 0)} lighting encode(s)")  # fmt: skip
    print(line)
    return 0
