"""``near export-ply ASSET.npz``: an LH-SLAT asset's relit 3D Gaussians as a standard 3D Gaussian
Splatting ``.ply`` (:mod:`near_blender.export`), without Blender.

::

    near export-ply ASSET.npz --env MAP.hdr|.exr [--camera CAMERA.json] [--strength S]
                    [--rotation DEG] [--sh-degree 0-3] [--colors linear|agx] [--pbr]
                    [--out FILE.ply] [--model PATH] [--device auto|cpu|cuda]

The asset is placed by its ``matrix_world`` and lit by the HDRI exactly as ``near render
ASSET.npz`` does; the Gaussians are those of the view of ``--camera`` (default: from the front,
20 degrees above, framing the asset). Writes ``--out`` (default: ``<asset>.ply`` beside the asset)
atomically; every input and the output path are checked before the model loads.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .. import NearError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export.splats import COLOR_SPACES, MAX_SH_DEGREE

    parser.add_argument("asset", metavar="ASSET.npz", help="an LH-SLAT asset (near import-image writes one)")
    parser.add_argument("--env", required=True, metavar="MAP", help="equirectangular HDRI (.hdr or .exr)")
    parser.add_argument(
        "--camera", metavar="JSON", help="the view the Gaussians are decoded for (camera JSON)"
    )
    parser.add_argument("--strength", type=float, default=1.0, metavar="S", help="HDRI strength (default 1)")
    parser.add_argument("--rotation", type=float, default=0.0, metavar="DEG", help="HDRI rotation about Z")
    parser.add_argument(
        "--sh-degree",
        type=int,
        default=0,
        choices=range(MAX_SH_DEGREE + 1),
        help="view-dependent colour: 0 = the view's colours; 1-3 = SH fitted from more views",
    )
    parser.add_argument(
        "--colors",
        choices=COLOR_SPACES,
        default="linear",
        help="linear: scene-linear HDR radiance (default); agx: display sRGB through AgX, for plain 3DGS viewers",
    )
    parser.add_argument("--pbr", action="store_true", help="add base_color_0..2, roughness, metallic")
    parser.add_argument("--out", metavar="FILE.ply", help="output file (default: <asset>.ply beside it)")
    parser.add_argument("--model", metavar="PATH", help="NeAR pipeline folder or Hub id ($NEAR_MODEL)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: $NEAR_DEVICE or auto")
    parser.add_argument("--progress", choices=("bar", "none"), default="bar", help="progress display")


def output_path(asset: Path, out: str | None) -> Path:
    """``--out`` (must end in .ply), or ``<asset name without .npz>.ply`` beside the asset."""
    from ..utils.atomic import check_writable_file

    path = (
        Path(out).expanduser().resolve()
        if out
        else asset.with_name(asset.name[: -len(asset.suffix)] + ".ply")
    )
    if path.suffix.lower() != ".ply":
        raise NearError(f"--out {path.name}: give a file name ending in .ply.")
    check_writable_file(path, "--out")
    return path


def load_renderer(model: str | None, device: str) -> object:
    """A :class:`~near_blender.scene.SceneRenderer` of ``model`` (``$NEAR_MODEL``, else the bundled one)."""
    from ..models.hub import bundled_model_folder
    from ..pipeline import NearPipeline
    from ..scene import SceneRenderer

    try:
        pipe = NearPipeline.from_pretrained(
            model or os.environ.get("NEAR_MODEL") or bundled_model_folder(), device=device
        )
    except NearError as e:
        raise NearError(
            f"{e} (the model: --model PATH, a pipeline folder or Hub id, or $NEAR_MODEL)"
        ) from None
    return SceneRenderer(pipe)


def run(args: argparse.Namespace) -> int:
    from ..export.ply import write_splat_ply
    from ..export.splats import asset_splats, default_camera
    from ..render.camera import read_camera_json
    from ..utils.progress import percent_bar
    from .render_asset import device_name, read_asset, read_environment

    t0 = time.perf_counter()
    asset_path = Path(args.asset).expanduser().resolve()
    if asset_path.suffix.lower() != ".npz":
        raise NearError(f"{asset_path.name}: give an LH-SLAT asset (.npz, as `near import-image` writes it).")
    asset = read_asset(asset_path)
    env = read_environment(args.env, args.strength, args.rotation)
    camera = (
        read_camera_json(Path(args.camera).expanduser(), "--camera")
        if args.camera
        else default_camera(asset.matrix_world)
    )
    out = output_path(asset_path, args.out)
    device = device_name(args.device)
    with percent_bar("near export-ply", args.progress == "none", dynamic_ncols=True) as progress:
        progress(0.0, "loading the model")
        renderer = load_renderer(args.model, device)
        cloud = asset_splats(renderer, asset, camera, env, args.sh_degree, args.colors, progress=progress)
        write_splat_ply(out, cloud, pbr=args.pbr)
    print(f"near export-ply: {asset_path.name} -> {out} ({len(cloud)} Gaussians, SH degree {args.sh_degree}, "
          f"{args.colors} colours) in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0
