"""The camera a .blend renders, as the stack's camera JSON (the Blender side of ``near camera-from-blend``).

Run by ``near camera-from-blend`` in a Blender binary or with the bpy module::

    python engine/camera_job.py FILE.blend [--camera NAME] [--frame N]             # bpy module
    blender -b --python-exit-code 1 --python engine/camera_job.py -- FILE.blend [...]

Opens the file, goes to the frame (default: the file's current frame) and reads the scene camera
(or the camera object ``--camera``) through :func:`.scene_bridge.scene_camera`, from the evaluated
scene as F12 does: render resolution and percentage, pixel aspect, sensor fit, shift, lens or
orthographic scale, clipping and the animated transform. Prints one line ``NEAR_EVENT {"event":
"camera", "camera": Camera.to_dict(), ...}``; the caller writes the file. Only bpy and the stack are
needed (the extension is loaded, not registered).

Exit status: 0 done, 2 user error (message on stderr as ``near camera-from-blend: error: ...``), 1 crash.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EVENT_PREFIX = "NEAR_EVENT "
COMMAND = "near camera-from-blend"
ROOT = Path(__file__).resolve().parents[1]  # the extension / repository root


def _scene_bridge() -> Any:
    """The extension's scene bridge (the repository root loaded as the package ``near_addon``)."""
    import importlib

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from near_blender.utils.extension_package import load_extension_package

    load_extension_package(ROOT, "near_addon")
    return importlib.import_module("near_addon.engine.scene_bridge")


def scene_cameras(scene: Any) -> list[str]:
    """Names of the camera objects in ``scene``, sorted."""
    return sorted(o.name for o in scene.objects if o.type == "CAMERA")


def camera_object(scene: Any, name: str | None) -> Any:
    """The camera object F12 would render with (``name``: a camera object of the scene instead)."""
    from near_blender import NearError

    cams = scene_cameras(scene)
    listed = ", ".join(repr(c) for c in cams) if cams else "none"
    if name is not None:
        obj = scene.objects.get(name)
        if obj is None or obj.type != "CAMERA":
            what = "is not in" if obj is None else f"is a {obj.type}, not a camera, in"
            raise NearError(
                f"Camera {name!r} {what} scene {scene.name!r}; its cameras: {listed}. Pass one of them to --camera."
            )
        return obj
    if scene.camera is None:
        fix = (
            f"pass --camera NAME (its cameras: {listed})"
            if cams
            else "add a camera to the scene and make it active (Scene Properties > Camera), then save the .blend"
        )
        raise NearError(f"Scene {scene.name!r} has no active camera: {fix}.")
    return scene.camera


def read_camera(scene: Any, name: str | None = None, frame: int | None = None) -> dict[str, Any]:
    """``{"camera": Camera.to_dict(), "name", "frame", "scene"}`` of ``scene`` at ``frame`` (default:
    the current frame), from the evaluated scene and camera as F12 reads them."""
    import bpy

    bridge = _scene_bridge()
    frame = scene.frame_current if frame is None else frame
    scene.frame_set(frame)
    obj = camera_object(scene, name)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    cam = bridge.scene_camera(depsgraph.scene_eval, obj.evaluated_get(depsgraph))
    return {"camera": cam.to_dict(), "name": obj.name, "frame": frame, "scene": scene.name}


def main(argv: list[str] | None = None) -> int:
    """``python camera_job.py FILE.blend [--camera NAME] [--frame N]`` (or after ``--`` in Blender)."""
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(prog=f"{COMMAND} (Blender side)")
    parser.add_argument("blend")
    parser.add_argument("--camera", default=None)
    parser.add_argument("--frame", type=int, default=None)
    args = parser.parse_args(argv)
    import bpy

    _scene_bridge()
    from near_blender import NearError

    try:
        path = Path(args.blend).resolve()
        if not path.is_file():
            raise NearError(f"No such .blend file: {path}")
        try:
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
        except RuntimeError as e:
            raise NearError(f"Blender cannot open {path}: {e}") from None
        event = {"event": "camera", **read_camera(bpy.context.scene, args.camera, args.frame)}
    except NearError as e:
        print(f"{COMMAND}: error: {e}", file=sys.stderr, flush=True)
        return 2
    print(EVENT_PREFIX + json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
