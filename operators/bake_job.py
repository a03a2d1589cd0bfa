"""The Blender side of ``near bake``: an LH-SLAT asset's PBR attributes baked onto a mesh, written as
a textured glTF binary (``.glb``).

    python operators/bake_job.py ASSET.npz --prior MESH --env MAP --out OUT.glb [--size 1024]
        [--strength S] [--rotation DEG] [--camera CAMERA.json] [--keep-uvs] [--up z|y] [--model DIR]

In an empty scene: the mesh through Blender's importer (glTF / OBJ / PLY / STL; its parts joined
into one mesh), the NeAR asset placed by the file's ``matrix_world``, a World with the HDRI (strength,
Mapping rotation), the camera of ``--camera`` (else none: a front view of the asset), then Object >
NeAR > Bake PBR to Mesh and Blender's glTF exporter, written atomically. Prints a ``NEAR_EVENT``
line ``done``. Exit status: 0 done, 2 user error (message on stderr), 1 crash.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "engine"))
from batch import EVENT_PREFIX, _bootstrap, ensure_registered  # noqa: E402

COMMAND = "near bake"
IMPORTERS = {".glb": "gltf", ".gltf": "gltf", ".obj": "obj", ".ply": "ply", ".stl": "stl"}


def emit(**ev: object) -> None:
    print(EVENT_PREFIX + json.dumps(ev), flush=True)


def import_mesh(path: Path, up: str | None) -> object:
    """The mesh file as one mesh object in the scene (parts joined), in the frame Blender's importer
    gives it (``up`` "z" / "y": the file's up axis, for OBJ / PLY / STL)."""
    import bpy

    from near_blender import NearError

    kind = IMPORTERS.get(path.suffix.lower())
    if kind is None:
        raise NearError(f"--prior {path.name}: use a .glb, .gltf, .obj, .ply or .stl mesh.")
    axis = {"up_axis": up.upper(), "forward_axis": "NEGATIVE_Y" if up == "z" else "NEGATIVE_Z"} if up else {}
    before = set(bpy.data.objects)
    if kind == "gltf":
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif kind == "obj":
        bpy.ops.wm.obj_import(filepath=str(path), **axis)
    else:
        getattr(bpy.ops.wm, f"{kind}_import")(filepath=str(path), **axis)
    meshes = [o for o in set(bpy.data.objects) - before if o.type == "MESH" and len(o.data.polygons)]
    if not meshes:
        raise NearError(f"--prior {path.name} holds no mesh with faces.")
    if len(meshes) > 1:
        with bpy.context.temp_override(active_object=meshes[0], selected_editable_objects=meshes):
            bpy.ops.object.join()
    return meshes[0]


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    p = argparse.ArgumentParser(prog=f"{COMMAND} (Blender side)")
    p.add_argument("asset")
    p.add_argument("--prior", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--rotation", type=float, default=0.0)
    p.add_argument("--camera", default=None)
    p.add_argument("--keep-uvs", action="store_true")
    p.add_argument("--up", choices=("z", "y"), default=None)
    p.add_argument("--model", default=None)
    args = p.parse_args(argv)
    if args.model:
        os.environ["NEAR_MODEL"] = args.model
    import bpy

    addon = _bootstrap()
    ensure_registered()
    import numpy as np

    from near_blender import NearError
    from near_blender.render.camera import read_camera_json
    from near_blender.utils.atomic import atomic_path

    demo = importlib.import_module(f"{addon.__name__}.operators.demo.scene")
    imp = importlib.import_module(f"{addon.__name__}.operators.import_image")
    t0 = time.perf_counter()
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        mesh = import_mesh(Path(args.prior), args.up)
        asset_path = Path(args.asset).resolve()
        with np.load(asset_path, allow_pickle=False) as npz:
            M = np.asarray(npz["matrix_world"], np.float64) if "matrix_world" in npz.files else np.eye(4)
        asset = imp.create_asset_object(bpy.context, asset_path.stem.split(".")[0], str(asset_path), M, "")
        demo.hdri_world(scene, str(Path(args.env).resolve()), args.rotation, args.strength)
        if args.camera:
            demo.camera_object(scene, read_camera_json(Path(args.camera), "--camera"))
        bpy.ops.object.select_all(action="DESELECT")
        for o in (mesh, asset):
            o.select_set(True)
        bpy.context.view_layer.objects.active = mesh
        try:
            result = bpy.ops.near.bake_pbr(size=args.size, keep_uvs=args.keep_uvs)
        except RuntimeError as e:  # the operator's error report
            raise NearError(str(e).removeprefix("Error: ").strip()) from None
        if result != {"FINISHED"}:
            raise NearError("the bake was cancelled")
        bpy.ops.object.select_all(action="DESELECT")
        mesh.select_set(True)
        with atomic_path(Path(args.out)) as tmp:
            bpy.ops.export_scene.gltf(filepath=str(tmp), export_format="GLB", use_selection=True)
    except NearError as e:
        print(f"{COMMAND}: error: {e}", file=sys.stderr, flush=True)
        return 2
    emit(event="done", out=str(Path(args.out).resolve()), faces=len(mesh.data.polygons), size=args.size,
         seconds=time.perf_counter() - t0)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
