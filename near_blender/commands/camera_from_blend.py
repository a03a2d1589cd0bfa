"""``near camera-from-blend``: the camera a .blend renders, written as the stack's camera JSON.

::

    near camera-from-blend shot.blend [--camera NAME] [--frame N] [--out camera.json] [--blender PATH]

Blender reads the camera: this command runs the extension's ``engine/camera_job.py`` in a Blender
binary (``--blender``, ``$BLENDER`` or ``blender`` on PATH) or with this Python's ``bpy`` module,
which reads the scene camera (or the camera object NAME) at frame N (default: the file's current
frame) exactly as F12 does (``scene_bridge.scene_camera``: render resolution and percentage, pixel
aspect, sensor fit, shift, lens, clipping, the animated transform). The result is written
atomically with :func:`~near_blender.render.camera.write_camera_json` (``viewmat``: OpenCV
world-to-camera in Blender's Z-up world; ``K`` in pixels of the ``width`` x ``height`` render) to
OUT, by default ``<blend stem>.camera.json`` next to the .blend. ``near import-image --camera`` and
``near render ASSET.npz --camera`` read it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import NearError
from ..utils.atomic import check_writable_file
from ..utils.blender_job import (
    blender_command,
    blender_failure,
    extension_script,
    find_blender,
    run_blender_events,
)

COMMAND = "near camera-from-blend"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("blend", help="the .blend file whose camera to write")
    parser.add_argument(
        "--camera",
        default=None,
        metavar="NAME",
        help="a camera object of the scene (default: the scene camera)",
    )
    parser.add_argument("--frame", type=int, default=None, help="frame (default: the file's current frame)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="JSON",
        help="camera JSON to write (default: <blend stem>.camera.json beside it)",
    )
    parser.add_argument(
        "--blender", default=None, metavar="PATH", help="Blender executable (default: bpy module)"
    )


def output_path(blend: Path, out: str | None) -> Path:
    """Where the JSON goes (``out``, or ``<blend stem>.camera.json`` beside the .blend), checked
    writable before Blender starts."""
    path = Path(out).expanduser().resolve() if out else blend.with_name(f"{blend.stem}.camera.json")
    check_writable_file(path, "--out")
    return path


def run(args: argparse.Namespace) -> int:
    from ..render.camera import Camera, write_camera_json

    blend = Path(args.blend).expanduser().resolve()
    if not blend.is_file():
        raise NearError(f"No such .blend file: {blend}. Give the path of a saved .blend.")
    if blend.suffix.lower() != ".blend":
        raise NearError(f"{blend.name} is not a .blend file; give the .blend whose camera to write.")
    out = output_path(blend, args.out)
    script = extension_script("engine/camera_job.py")
    forwarded = [str(blend)]
    if args.camera is not None:
        forwarded += ["--camera", args.camera]
    if args.frame is not None:
        forwarded += ["--frame", str(args.frame)]
    found: dict[str, Any] = {}

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("event") == "camera":
            found.update(ev)

    code, tail = run_blender_events(blender_command(find_blender(args.blender), script, forwarded), on_event)
    if code != 0 or "camera" not in found:
        raise blender_failure(COMMAND, code or 1, tail)
    camera = Camera.from_dict(found["camera"])
    write_camera_json(camera, out)
    print(f"{COMMAND}: camera {found['name']!r} of scene {found['scene']!r} at frame {found['frame']} "
          f"({camera.width}x{camera.height}, {camera.model}) -> {out}")  # fmt: skip
    return 0
