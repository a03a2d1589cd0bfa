"""``near render ASSET.npz``: render an LH-SLAT asset without Blender, as F12 renders it.

::

    near render ASSET.npz --env MAP.hdr|.exr --camera CAMERA.json [--strength S] [--rotation DEG]
                [--transparent] [--out DIR] [--model PATH] [--device auto|cpu|cuda]

The same stack as the NeAR engine's F12 (:class:`~near_blender.scene.SceneRenderer`, then
:func:`~near_blender.render.passes.pass_images`), bpy-free:

* the asset: the ``.npz``'s ``coords`` / ``feats`` (an LH-SLAT, as ``near import-image`` writes
  it), placed by its ``matrix_world`` (canonical box [-0.5, 0.5]^3 -> world; a mesh prior's frame)
  or, without one, by the identity -- as a NeAR asset object with that transform in a .blend;
* the environment: the equirectangular HDRI times ``--strength`` (the World's Background Strength),
  turned by ``--rotation`` degrees about Z as a World Mapping node (type Point) with that Z rotation
  turns it (stored as Blender stores it, float32 radians);
* the camera: a camera JSON (``near camera-from-blend`` writes the one F12 of a .blend uses).

Writes ``<asset>.exr`` -- every pass as one multilayer float32 EXR with Blender's channel names
(``ViewLayer.Combined.RGBA``, ``ViewLayer.Depth.Z``, ``ViewLayer.Alpha.A``, ``ViewLayer.Base
Color.RGB``, ``ViewLayer.Roughness.X``, ``ViewLayer.Metallic.X``, ``ViewLayer.Shadow.X``,
``ViewLayer.Normal.XYZ``) -- and ``<asset>.png``, Combined through Blender's AgX view transform
(8-bit sRGB display; straight alpha with ``--transparent``), atomically, to ``--out`` (default: the
asset's folder), where ``<asset>`` is the asset's file name without ``.npz``. Every input and the
output folder are checked before the model loads.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..models.hub import bundled_model_folder

# Options of this form (defaults None: given or not); the .blend form refuses them.
ASSET_OPTIONS = ("env", "camera", "strength", "rotation", "device", "transparent")
PASSES = ("light", "base")  # the networks' passes F12 runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``near render ASSET.npz`` (``--out`` and ``--model`` are shared with the .blend form)."""
    g = parser.add_argument_group("rendering an LH-SLAT asset (.npz) without Blender")
    g.add_argument("--env", metavar="MAP", help="equirectangular HDRI lighting the asset (.hdr or .exr)")
    g.add_argument("--camera", metavar="JSON", help="camera JSON (near camera-from-blend writes one)")
    g.add_argument("--strength", type=float, metavar="S", help="HDRI strength (World Background; default 1)")
    g.add_argument(
        "--rotation",
        type=float,
        metavar="DEG",
        help="HDRI rotation about Z in degrees (World Mapping; default 0)",
    )
    g.add_argument(
        "--transparent",
        action="store_true",
        default=None,
        help="no world behind the asset (Film > Transparent)",
    )
    g.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where the model runs (default: $NEAR_DEVICE or auto)",
    )


@dataclass(frozen=True)
class AssetJob:
    """Everything read and checked before the model loads."""

    asset: Any  # near_blender.scene.PlacedAsset
    camera: Any  # near_blender.render.camera.Camera
    env: Any  # near_blender.render.envmap.Environment
    exr_path: Path
    png_path: Path
    model: str
    device: str
    transparent: bool


def read_asset(path: Path) -> Any:
    """The :class:`~near_blender.scene.PlacedAsset` of an LH-SLAT ``.npz``: ``coords`` / ``feats``
    and the ``matrix_world`` [4, 4] placement when the file has one (else the identity)."""
    from ..data.slat_io import load_slat_npz
    from ..scene import PlacedAsset, similarity

    if not path.is_file():
        raise NearError(f"No such LH-SLAT file: {path}. Give the .npz that `near import-image` wrote.")
    coords, feats = load_slat_npz(path)
    with np.load(path, allow_pickle=False) as npz:
        M = np.asarray(npz["matrix_world"], np.float64) if "matrix_world" in npz.files else np.eye(4)
    if M.shape != (4, 4) or not np.isfinite(M).all():
        raise NearError(f"{path.name}: 'matrix_world' must be a finite 4x4 matrix (got shape {M.shape}).")
    try:
        similarity(M)
    except NearError as e:
        raise NearError(f"{path.name}: 'matrix_world': {e}") from None
    st = path.stat()
    return PlacedAsset((str(path), st.st_mtime_ns, st.st_size), coords, feats, M)


def read_environment(path: str, strength: float, rotation_deg: float) -> Any:
    """The :class:`~near_blender.render.envmap.Environment` of ``--env``, as a World whose
    Background has ``strength`` and whose Mapping node turns ``rotation_deg`` about Z gives it."""
    from ..render.exr import read_envmap

    p = Path(path).expanduser()
    if p.suffix.lower() not in (".hdr", ".exr"):
        raise NearError(f"--env {p.name}: use an equirectangular HDRI, an .hdr or .exr file.")
    if not p.is_file():
        raise NearError(f"--env {p}: no such file. Give an equirectangular .hdr or .exr HDRI.")
    if not (math.isfinite(strength) and strength >= 0):
        raise NearError(f"--strength {strength}: give a number >= 0 (the World's Background Strength).")
    if not math.isfinite(rotation_deg):
        raise NearError(f"--rotation {rotation_deg}: give an angle in degrees.")
    # Blender keeps the Mapping rotation and the Background strength as float32.
    rotation = float(np.float32(math.radians(rotation_deg)))
    return read_envmap(p, float(np.float32(strength)), rotation)


def device_name(choice: str | None) -> str:
    """``cpu`` or ``cuda`` for ``--device`` (default ``$NEAR_DEVICE``, else auto: cuda when present)."""
    import torch

    name = (choice or os.environ.get("NEAR_DEVICE") or "auto").lower()
    if name not in ("auto", "cpu", "cuda"):
        raise NearError(f"$NEAR_DEVICE={name!r}: use auto, cpu or cuda.")
    if name == "cuda" and not torch.cuda.is_available():
        raise NearError("--device cuda: no CUDA GPU is available; use --device cpu.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_args(args: argparse.Namespace, asset_path: Path) -> AssetJob:
    """Read and check every input and the output folder (nothing is written, no model loaded)."""
    from ..render.camera import read_camera_json
    from ..utils.atomic import check_writable_file

    blend_only = [f"--{o}" for o in ("frames", "engine", "resolution", "blender") if getattr(args, o, None)]
    blend_only += ["--overwrite"] if getattr(args, "overwrite", False) else []
    if blend_only:
        raise NearError(f"{', '.join(blend_only)} apply to a .blend; an LH-SLAT .npz renders one image.")
    needs = {
        "env": "--env MAP.hdr|.exr (the HDRI lighting it)",
        "camera": "--camera CAMERA.json (e.g. from `near camera-from-blend shot.blend`)",
    }
    missing = [text for o, text in needs.items() if not getattr(args, o)]
    if missing:
        raise NearError(f"Rendering {asset_path.name} needs {' and '.join(missing)}.")
    asset = read_asset(asset_path)
    camera = read_camera_json(Path(args.camera).expanduser(), "--camera")
    env = read_environment(args.env, 1.0 if args.strength is None else args.strength, args.rotation or 0.0)
    out = Path(args.out).expanduser().resolve() if args.out else asset_path.parent
    if out.exists() and not out.is_dir():
        raise NearError(f"--out {out} is a file; give the folder to write the images to.")
    stem = asset_path.name[: -len(asset_path.suffix)]
    exr_path, png_path = out / f"{stem}.exr", out / f"{stem}.png"
    for p in (exr_path, png_path):
        check_writable_file(p, "--out")
    model = args.model or os.environ.get("NEAR_MODEL") or str(bundled_model_folder())
    return AssetJob(
        asset, camera, env, exr_path, png_path, model, device_name(args.device), bool(args.transparent)
    )


def render_passes(job: AssetJob, progress: Any = None) -> dict[str, np.ndarray]:
    """Load the model and render the asset: the frame's passes (:mod:`near_blender.render.passes`)."""
    from ..pipeline import NearPipeline
    from ..render.passes import pass_images
    from ..scene import SceneRenderer

    if progress is not None:
        progress(0.0, "loading the model")
    try:
        pipe = NearPipeline.from_pretrained(job.model, device=job.device)
    except NearError as e:
        raise NearError(
            f"{e} (the model: --model PATH, a pipeline folder or Hub id, or $NEAR_MODEL)"
        ) from None
    images = SceneRenderer(pipe).render([job.asset], job.camera, job.env, passes=PASSES, progress=progress)
    return pass_images(job.camera, job.env, images, transparent=job.transparent)


def write_outputs(job: AssetJob, passes: dict[str, np.ndarray]) -> None:
    """The multilayer EXR (float32) and the AgX PNG, each written atomically."""
    from PIL import Image

    from ..render.exr import write_exr
    from ..render.passes import exr_channels
    from ..render.tonemap import agx
    from ..utils.atomic import atomic_path

    write_exr(job.exr_path, exr_channels(passes), half=False)
    rgba = passes["rgba"]
    a = rgba[..., 3:]
    rgb = rgba[..., :3] / np.where(a > 0, a, 1.0) if job.transparent else rgba[..., :3]  # straight colour
    display = agx(rgb)
    if job.transparent:
        display = np.concatenate([display, np.clip(a, 0.0, 1.0)], axis=-1)
    pixels = (display * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(job.png_path) as tmp:
        Image.fromarray(pixels, "RGBA" if job.transparent else "RGB").save(tmp, format="PNG")


def run(args: argparse.Namespace, asset_path: Path) -> int:
    from ..utils.progress import percent_bar

    t0 = time.perf_counter()
    job = check_args(args, asset_path)
    with percent_bar("near render", args.progress == "none", dynamic_ncols=True) as progress:
        passes = render_passes(job, progress)
        write_outputs(job, passes)
    print(f"near render: {asset_path.name} ({len(job.asset.coords)} voxels), {job.camera.width}x{job.camera.height} "
          f"-> {job.exr_path} and {job.png_path.name} in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0
