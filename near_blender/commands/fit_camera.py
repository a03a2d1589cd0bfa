"""``near fit-camera IMAGE --prior PRIOR --out camera.json``: the camera that took a photo.

Fits the camera so that the geometry prior's silhouette matches the image's alpha
(:mod:`near_blender.data.camera_fit`), starting from ``--camera`` (a camera JSON, e.g. from
``near camera-from-blend``) or, without one, from 16 cameras around the prior with the field of
view ``--fov``. Prints the silhouette IoU before and after and writes the fitted camera JSON,
ready for ``near import-image --camera``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import NearError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the photo, background removed (PNG/JPEG/WebP with alpha, or EXR)")
    parser.add_argument("--prior", required=True, help="geometry prior: a mesh (.obj .ply .stl .glb .gltf) or a "
                        "voxel .npz with 'coords'")  # fmt: skip
    parser.add_argument("--up", choices=("z", "y"), default=None,
                        help="the mesh's up axis (default: as Blender's importer for the format: OBJ and glTF "
                             "Y-up, PLY and STL Z-up)")  # fmt: skip
    parser.add_argument("--camera", help="start camera JSON (default: 16 guesses around the prior)")
    parser.add_argument("--fov", type=float, default=40.0,
                        help="horizontal field of view of the guesses, degrees (without --camera; default 40)")  # fmt: skip
    parser.add_argument("--fit-focal", action="store_true", help="fit the focal length too")
    parser.add_argument("--out", required=True, help="output camera JSON")


def run(args: argparse.Namespace) -> int:
    from ..data.camera_fit import MAX_ROLL, fit_camera, iou_warning, orbit_guesses, roll_deg
    from ..render.camera import (
        Camera,
        check_image_size,
        intrinsics_from_fov,
        read_camera_json,
        write_camera_json,
    )
    from ..utils.progress import percent_bar
    from .import_image import prior_cloud, read_rgba

    out = Path(args.out)
    if out.is_dir() or not out.parent.exists():
        raise NearError(f"--out {out}: give a file path in an existing folder (e.g. camera.json).")
    if not 1.0 <= args.fov <= 170.0:
        raise NearError(f"--fov {args.fov}: give a field of view between 1 and 170 degrees.")
    rgba = read_rgba(args.image)
    H, W = rgba.shape[:2]
    if args.camera:
        start = read_camera_json(args.camera)
        check_image_size(start, W, H, "give --camera a camera of the photo's aspect ratio (in Blender: Output "
                         "Properties > Format > Resolution), or leave --camera out.")  # fmt: skip
        starts = [start.resized(W, H)]
    else:
        like = Camera(np.eye(4), intrinsics_from_fov(args.fov, W, H), W, H)
        starts = []
    cloud = prior_cloud(args.prior, args.up)
    if not starts:
        starts = orbit_guesses(cloud, like)
    with percent_bar("near fit-camera", file=sys.stderr) as progress:
        fit = fit_camera(cloud, rgba[..., 3], starts, fit_focal=args.fit_focal, progress=progress)
    write_camera_json(fit.camera, out)
    print(
        f"near fit-camera: silhouette IoU {fit.start_iou:.3f} -> {fit.iou:.3f} in {fit.seconds:.0f} s -> {out}"
    )
    warning = iou_warning(fit.iou, "another start (--camera from a camera that roughly frames the photo) or "
                          "the prior's --up")  # fmt: skip
    if warning:
        print(f"near fit-camera: warning: {warning}", file=sys.stderr)
        return 1
    roll = roll_deg(fit.camera)
    if abs(roll) > MAX_ROLL:  # a rigidly turned prior fits a turned camera: usually the up axis
        print(f"near fit-camera: warning: the fitted camera is rolled by {roll:.0f} degrees (a photo is usually "
              "upright). If the prior's up axis is wrong, fix --up (z or y) and fit again; otherwise the "
              "asset will be lit from a turned direction.", file=sys.stderr)  # fmt: skip
    return 0
