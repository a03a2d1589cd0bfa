"""``near bake ASSET.npz --prior MESH``: an LH-SLAT asset's base colour, roughness and metallic baked
into textures of its mesh, written as a textured glTF binary.

::

    near bake ASSET.npz --prior MESH.glb|.obj|.ply|.stl --env MAP.hdr|.exr [--out OUT.glb]
              [--size 1024] [--strength S] [--rotation DEG] [--camera CAMERA.json] [--keep-uvs]
              [--up z|y] [--model PATH] [--blender PATH]

Blender does the work (``operators/bake_job.py``, in a Blender binary or with the bpy module): the
mesh through Blender's importer, the asset placed by its ``matrix_world``, Object > NeAR > Bake PBR
to Mesh (Smart UV Project unless ``--keep-uvs``; :mod:`near_blender.export.bake`), then Blender's
glTF exporter. Every input and the output path are checked before Blender starts; the ``.glb`` is
written atomically (default: ``<asset>.glb`` beside the asset).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from .. import NearError

COMMAND = "near bake"
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("asset", metavar="ASSET.npz", help="an LH-SLAT asset (near import-image writes one)")
    parser.add_argument(
        "--prior", required=True, metavar="MESH", help="the mesh to bake onto (its geometry prior)"
    )
    parser.add_argument("--env", required=True, metavar="MAP", help="HDRI of the World (.hdr or .exr)")
    parser.add_argument(
        "--out", metavar="OUT.glb", help="output glTF binary (default: <asset>.glb beside it)"
    )
    parser.add_argument("--size", type=int, default=1024, help="texture width and height (default 1024)")
    parser.add_argument("--strength", type=float, default=1.0, metavar="S", help="HDRI strength")
    parser.add_argument("--rotation", type=float, default=0.0, metavar="DEG", help="HDRI rotation about Z")
    parser.add_argument("--camera", metavar="JSON", help="the view the Gaussians are decoded for")
    parser.add_argument("--keep-uvs", action="store_true", help="bake into the mesh's own UVs")
    parser.add_argument("--up", choices=("z", "y"), help="the mesh file's up axis (OBJ, PLY, STL)")
    parser.add_argument("--model", metavar="PATH", help="NeAR pipeline folder ($NEAR_MODEL)")
    parser.add_argument("--blender", metavar="PATH", help="Blender executable (default: bpy module)")


def check_inputs(args: argparse.Namespace) -> Path:
    """Every input readable and the output writable (nothing started yet); returns the output path."""
    from ..render.camera import read_camera_json
    from ..utils.atomic import check_writable_file
    from .render_asset import read_asset, read_environment

    asset = Path(args.asset).expanduser().resolve()
    read_asset(asset)
    prior = Path(args.prior).expanduser()
    if prior.suffix.lower() not in MESH_SUFFIXES:
        raise NearError(f"--prior {prior.name}: use a {', '.join(MESH_SUFFIXES)} mesh.")
    if not prior.is_file():
        raise NearError(f"--prior {prior}: no such file.")
    read_environment(args.env, args.strength, args.rotation)
    if args.camera:
        read_camera_json(Path(args.camera).expanduser(), "--camera")
    if not 16 <= args.size <= 8192:
        raise NearError(f"--size {args.size}: give 16..8192 texels.")
    out = (
        Path(args.out).expanduser().resolve()
        if args.out
        else asset.with_name(asset.name.split(".")[0] + ".glb")
    )
    if out.suffix.lower() != ".glb":
        raise NearError(f"--out {out.name}: give a file name ending in .glb (a glTF binary).")
    check_writable_file(out, "--out")
    return out


def run(args: argparse.Namespace) -> int:
    from ..utils.blender_job import (
        blender_command,
        blender_failure,
        extension_script,
        find_blender,
        run_blender_events,
    )

    t0 = time.perf_counter()
    out = check_inputs(args)
    script = extension_script("operators/bake_job.py")
    forwarded = [str(Path(args.asset).expanduser().resolve()), "--prior", str(Path(args.prior).expanduser().resolve()),
                 "--env", str(Path(args.env).expanduser().resolve()), "--out", str(out), "--size", str(args.size),
                 "--strength", str(args.strength), "--rotation", str(args.rotation)]  # fmt: skip
    if args.camera:
        forwarded += ["--camera", str(Path(args.camera).expanduser().resolve())]
    if args.keep_uvs:
        forwarded.append("--keep-uvs")
    if args.up:
        forwarded += ["--up", args.up]
    model = args.model or os.environ.get("NEAR_MODEL")
    if model:
        forwarded += ["--model", str(model)]
    done: dict[str, Any] = {}
    print(
        f"{COMMAND}: baking {Path(args.asset).name} onto {Path(args.prior).name} at {args.size}² ...",
        flush=True,
    )
    code, tail = run_blender_events(
        blender_command(find_blender(args.blender), script, forwarded),
        lambda ev: done.update(ev) if ev.get("event") == "done" else None,
    )
    if code != 0 or not done:
        raise blender_failure(COMMAND, code or 1, tail)
    print(f"{COMMAND}: {done['faces']}-face mesh with {args.size}² base colour, roughness and metallic textures "
          f"-> {out} in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0
