"""Batch and animation renders of a .blend with the NeAR engine (the Blender side of ``near render``).

Run by ``near render`` (or by hand) in a Blender binary or with the bpy module::

    blender -b FILE.blend --python-exit-code 1 --python engine/batch.py -- --frames 1-4,7 [options]
    python engine/batch.py FILE.blend --frames 1-4,7 [options]          # bpy module

Every frame is rendered on its own (``scene.frame_set`` then ``render.render``), so animated cameras,
objects and world Mapping rotations are evaluated per frame, and saved with the scene's output
settings (multilayer EXR, PNG, ...) to ``scene.render.filepath`` or ``--out DIR``, atomically (a
killed render leaves no half-written frame). Frames whose file exists are skipped unless
``--overwrite``. The NeAR engine's per-asset and per-lighting caches persist across the frames of
one process. Progress goes to stdout as ``NEAR_EVENT {json}`` lines (``--progress json``).

Exit status: 0 done, 2 user error (message on stderr as ``near render: error: ...``), 1 crash.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

EVENT_PREFIX = "NEAR_EVENT "
ROOT = Path(__file__).resolve().parents[1]  # the extension / repository root
PACKAGE = "near_addon"
ENGINE_ALIASES = {
    "near": "NEAR",
    "eevee": "BLENDER_EEVEE",
    "cycles": "CYCLES",
    "workbench": "BLENDER_WORKBENCH",
}


def _bootstrap() -> Any:
    """Make ``near_blender`` importable and the extension root importable as ``near_addon``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from near_blender.utils.extension_package import load_extension_package

    return load_extension_package(ROOT, PACKAGE)


def bench_parser() -> Any:
    """The arguments every Blender-side benchmark takes: ``--model`` (pipeline folder), ``--hdri``
    (a Blender studio light for the world) and ``--json`` (where the results go)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="NeAR pipeline folder")
    parser.add_argument("--hdri", default="studio")
    parser.add_argument("--json", required=True)
    return parser


def start_script(parser: Any) -> tuple[Any, Any]:
    """For the Blender-side scripts (demo, benchmarks): parse the arguments after ``--`` (Blender
    binary) or all of them (bpy module), use ``--model`` as ``$NEAR_MODEL``, register the extension.
    Returns (arguments, the extension package)."""
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    args = parser.parse_args(argv)
    if getattr(args, "model", None):
        os.environ["NEAR_MODEL"] = str(args.model)
    addon = _bootstrap()
    ensure_registered()
    return args, addon


def ensure_registered() -> None:
    """Register the extension unless a NeAR engine is registered already (installed extension)."""
    import bpy

    if bpy.types.RenderEngine.bl_rna_get_subclass_py("NEAR") is None:
        _bootstrap().register()


def _session_module() -> Any:
    """The session module of whichever copy of the extension registered the NEAR engine."""
    import bpy

    cls = bpy.types.RenderEngine.bl_rna_get_subclass_py("NEAR")
    if cls is None:
        return None
    return sys.modules.get(cls.__module__.rpartition(".")[0] + ".session")


def cache_stats() -> dict[str, int]:
    """Summed cache counters of the NeAR engine's scene renderers in this process."""
    mod = _session_module()
    return mod.render_caches().stats() if mod is not None else {}


# ---------------------------------------------------------------------------------------------
# Checks and paths
# ---------------------------------------------------------------------------------------------


def engine_id(name: str | None, scene: Any) -> str:
    """Blender's engine id for ``--engine`` (NEAR, BLENDER_EEVEE, CYCLES, an alias, or SCENE)."""
    if not name or name.upper() == "SCENE":
        return scene.render.engine
    return ENGINE_ALIASES.get(name.lower(), name.upper())


def check_scene(scene: Any, engine: str) -> list[str]:
    """Raise :class:`NearError` for what would make every frame fail; returns the asset names."""
    import bpy

    from near_blender import NearError

    if scene.camera is None:
        raise NearError(
            f"Scene {scene.name!r} has no active camera. Add a camera and make it active (Scene Properties > "
            "Camera), then save the .blend."
        )
    if engine != "NEAR":
        return []
    assets = [
        o
        for o in scene.objects
        if getattr(o, "near_asset", None) is not None and o.near_asset.is_asset and not o.hide_render
    ]
    if not assets:
        raise NearError(
            f"Scene {scene.name!r} has no NeAR asset to render. Import one first (File > Import > Image as "
            "NeAR Asset) or render with another engine (--engine eevee)."
        )
    missing = []
    for o in assets:
        rel = o.near_asset.sidecar
        path = Path(bpy.path.abspath(rel, library=o.library)) if rel else None
        if o.near_asset.packed is None and (path is None or not path.is_file()):
            missing.append(f"{o.name} -> {path if path else '(no file set)'}")
    if missing:
        raise NearError(
            "The LH-SLAT file (sidecar .npz) of these NeAR assets is missing: " + "; ".join(missing)
            + ". Keep each <image>.near.npz next to the .blend (or fix the path in Object Properties > NeAR), "
            "or re-import the image."
        )  # fmt: skip
    return [o.name for o in assets]


def set_output_dir(scene: Any, out: str | os.PathLike[str]) -> None:
    """Point ``scene.render.filepath`` into ``out``, keeping the scene's file-name pattern."""
    fp = scene.render.filepath
    base = "" if not fp or fp.endswith(("/", "\\")) else os.path.basename(fp)
    folder = os.path.abspath(os.fspath(out))
    scene.render.filepath = os.path.join(folder, base) if base else folder + os.sep


def check_output(scene: Any, paths: Sequence[Path]) -> None:
    """Refuse, before any frame renders, outputs that would lose frames: a movie format (every
    frame would overwrite the one movie file) and folders that cannot be written."""
    from near_blender import NearError

    settings = scene.render.image_settings
    if getattr(settings, "media_type", "IMAGE") == "VIDEO" or settings.file_format == "FFMPEG":
        raise NearError(
            "The scene's output is a movie (FFMPEG): NeAR renders frames one by one and would write each over "
            "the same movie file. Set Output Properties > Output > File Format to PNG or OpenEXR (or pass an "
            "image --out folder after changing it), then encode the frames, e.g. in the Video Sequencer."
        )
    from near_blender.utils.atomic import folder_write_problem

    for folder in sorted({p.parent for p in paths}):
        problem = folder_write_problem(folder)
        if problem:
            raise NearError(
                f"Cannot write frames to {folder}: {problem}. Choose another output folder with --out (or "
                "Output Properties > Output in the .blend)."
            )


def frame_output(scene: Any, frame: int) -> Path:
    """The file Blender writes frame ``frame`` to (``#`` padding and extension applied)."""
    import bpy

    return Path(bpy.path.abspath(scene.render.frame_path(frame=frame)))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_frame(scene: Any, frame: int, path: Path) -> None:
    """Render ``frame`` and save it to ``path`` with the scene's image settings (atomically)."""
    import bpy

    from near_blender import NearError

    session = _session_module()
    if session is not None:
        session.last_error = None
    scene.frame_set(frame)
    try:
        bpy.ops.render.render(write_still=False, scene=scene.name)
    except RuntimeError as e:  # Blender reports engine errors as operator errors
        raise NearError(f"Frame {frame}: {str(e).removeprefix('Error: ').strip()}") from None
    if session is not None and session.last_error and scene.render.engine == "NEAR":
        raise NearError(f"Frame {frame}: {session.last_error}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        bpy.data.images["Render Result"].save_render(filepath=str(tmp), scene=scene)
        if not tmp.is_file():
            raise NearError(f"Frame {frame}: Blender wrote no file to {path}.")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def render_frames(
    scene: Any,
    frames: Sequence[int],
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    engine: str | None = "NEAR",
    resolution: tuple[int, int] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Render ``frames`` of ``scene``; yields progress events (start, one per frame, end).

    Events: ``{"event": "start", "frames": n, "todo": k, "engine", "assets"}``, ``{"event": "frame",
    "frame", "path", "status": "done" | "skipped", "seconds", "done", "total"}``, ``{"event": "end",
    "done", "skipped", "seconds", "cache": {...}}`` where ``cache`` holds the NeAR engine's cache
    counters for this batch (``asset_misses`` = asset encodes, ``lighting_misses`` = lighting encodes).
    """
    from near_blender import NearError

    eng = engine_id(engine, scene)
    if eng == "NEAR":
        ensure_registered()
    try:
        scene.render.engine = eng
    except TypeError:
        raise NearError(f"Unknown render engine {engine!r}; use NEAR, BLENDER_EEVEE or CYCLES.") from None
    if resolution is not None:
        scene.render.resolution_x, scene.render.resolution_y = resolution
        scene.render.resolution_percentage = 100
    if out is not None:
        set_output_dir(scene, out)
    if not frames:
        raise NearError("No frames to render.")
    scene.frame_set(frames[0])
    assets = check_scene(scene, eng)
    paths = {f: frame_output(scene, f) for f in frames}
    check_output(scene, list(paths.values()))
    todo = [f for f in frames if overwrite or not paths[f].exists()]
    t_start = time.perf_counter()
    before = cache_stats()
    yield {"event": "start", "frames": len(frames), "todo": len(todo), "engine": eng, "assets": assets,
           "output": str(paths[frames[0]].parent)}  # fmt: skip
    done = skipped = 0
    for i, f in enumerate(frames):
        if cancel is not None and cancel():
            break
        if f not in todo:
            skipped += 1
            yield {"event": "frame", "frame": f, "path": str(paths[f]), "status": "skipped", "seconds": 0.0,
                   "done": i + 1, "total": len(frames)}  # fmt: skip
            continue
        t0 = time.perf_counter()
        render_frame(scene, f, paths[f])
        done += 1
        yield {"event": "frame", "frame": f, "path": str(paths[f]), "status": "done",
               "seconds": time.perf_counter() - t0, "done": i + 1, "total": len(frames)}  # fmt: skip
    after = cache_stats()
    cache = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    yield {"event": "end", "done": done, "skipped": skipped, "seconds": time.perf_counter() - t_start,
           "cache": cache}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Script entry point
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """Options shared by ``near render`` and this script."""
    parser.add_argument(
        "--frames", default=None, help="frames to render, e.g. 1-4,7 (default: the scene's range)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the scene's output path)")
    parser.add_argument("--engine", default="NEAR", help="NEAR (default), eevee, cycles, or SCENE (keep)")
    parser.add_argument("--resolution", default=None, metavar="WxH", help="override the render size")
    parser.add_argument("--model", default=None, metavar="PATH", help="NeAR pipeline folder or Hub id")
    parser.add_argument("--overwrite", action="store_true", help="re-render frames whose file exists")


def main(argv: list[str] | None = None) -> int:
    """``python batch.py FILE.blend [options]`` or ``blender -b FILE.blend --python batch.py -- [options]``."""
    import argparse

    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(prog="near render (Blender side)")
    parser.add_argument(
        "blend", nargs="?", default=None, help=".blend file (default: the one Blender opened)"
    )
    add_arguments(parser)
    parser.add_argument("--progress", choices=("json", "print", "none"), default="print")
    args = parser.parse_args(argv)
    if args.model:
        os.environ["NEAR_MODEL"] = args.model
    import bpy

    try:
        _bootstrap()
        import numpy  # noqa: F401 - the stack's own dependencies, checked before any frame starts
        import torch  # noqa: F401
    except ImportError as e:  # a Blender binary whose Python lacks the stack's wheels
        print(f"near render: error: this Blender's Python ({sys.executable}) cannot import "
              f"{e.name or 'a dependency'} ({e}). Install the NeAR extension into this Blender "
              "(its wheels carry torch and the rest), or run `near render` without --blender "
              "to use the bpy module of the project's environment.", file=sys.stderr, flush=True)  # fmt: skip
        return 2
    from near_blender import NearError
    from near_blender.utils.frames import parse_frames, parse_resolution

    try:
        ensure_registered()  # before loading, so the file's NeAR properties are read as such
        if args.blend is not None:
            path = Path(args.blend).resolve()
            if not path.is_file():
                raise NearError(f"No such .blend file: {path}")
            if not bpy.data.filepath or Path(bpy.data.filepath).resolve() != path:
                try:
                    bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
                except RuntimeError as e:
                    raise NearError(f"Blender cannot open {path}: {e}") from None
        elif not bpy.data.filepath:
            raise NearError("No .blend file given.")
        scene = bpy.context.scene
        frames = (
            parse_frames(args.frames) if args.frames
            else list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
        )  # fmt: skip
        res = parse_resolution(args.resolution) if args.resolution else None
        for ev in render_frames(scene, frames, args.out, args.overwrite, args.engine, res):
            if args.progress == "json":
                print(EVENT_PREFIX + json.dumps(ev), flush=True)
            elif args.progress == "print" and ev["event"] == "frame":
                print(f"near render: frame {ev['frame']} {ev['status']} -> {ev['path']}", flush=True)
    except NearError as e:
        print(f"near render: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
