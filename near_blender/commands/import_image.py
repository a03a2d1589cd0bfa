"""``near import-image IMAGE --prior PRIOR --out ASSET.npz``: stage 1 without Blender.

IMAGE: a PNG/JPEG/WebP (sRGB, alpha = the object's mask) or an EXR (scene-linear RGBA). PRIOR: the
geometry prior (the shape of the object, e.g. from an image-to-3D model), either a mesh file
(.obj .ply .stl .glb .gltf, read by :mod:`near_blender.data.mesh_io` in Blender's Z-up world frame;
``--up`` overrides the format's up axis) or an ``.npz`` holding ``coords [N, 3]`` voxel indices in
the canonical 64³ grid (as ``near datagen`` writes ``mesh_voxels.npz``). Writes the LH-SLAT
(``coords``, ``feats``) and, for a mesh prior, ``matrix_world`` (canonical box -> the mesh's Z-up
frame) to OUT atomically; the file loads in the engine as a NeAR asset sidecar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import NearError
from ..render.color import srgb_to_linear


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image with a transparent background (PNG/JPEG/WebP sRGB, or EXR)")
    parser.add_argument(
        "--prior",
        required=True,
        help="geometry prior: a mesh (.obj .ply .stl .glb .gltf; all its meshes and nodes) or an .npz "
        "with voxel 'coords'",
    )
    parser.add_argument(
        "--up",
        choices=("z", "y"),
        help="up axis of a mesh prior, which is turned Z-up as Blender's importer does (default: as "
        "Blender's importer for the format: OBJ and glTF Y-up, PLY and STL Z-up)",
    )
    parser.add_argument("--out", required=True, help="output .npz (LH-SLAT sidecar)")
    parser.add_argument("--model", help="pipeline folder or Hub repo (default: the bundled model)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--camera",
        help="camera JSON of the camera that took the image (`near fit-camera` or `near camera-from-blend` "
        "write one: 'viewmat' world-to-camera with OpenCV axes in the prior's Z-up frame, see --up; 'K' in pixels; "
        "'width', 'height'); needed by models whose stage 1 projects the image onto the prior (the bundled one)",
    )
    parser.add_argument(
        "--no-camera-check",
        action="store_true",
        help="import even when the prior's silhouette through --camera does not match the image's alpha",
    )


def read_rgba(path: str | Path) -> np.ndarray:
    """Premultiplied scene-linear RGBA ``[H, W, 4]``, row 0 at the top; errors name the fix."""
    p = Path(path)
    if not p.is_file():
        raise NearError(f"Image not found: {p}")
    if p.suffix.lower() == ".exr":
        from ..render.exr import read_exr_channels

        ch = read_exr_channels(p)
        names = {k.rsplit(".", 1)[-1].upper(): k for k in ch}
        if not {"R", "G", "B"} <= set(names):
            raise NearError(f"{p.name} has no R, G, B channels (it has {sorted(ch)}).")
        rgb = np.stack([ch[names[c]] for c in "RGB"], -1).astype(np.float32)
        a = ch[names["A"]].astype(np.float32) if "A" in names else None
        premultiplied = True
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                im.load()
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise NearError(
                f"Cannot read the image {p.name} ({e}). Is it a complete PNG/JPEG file?"
            ) from None
        rgb = srgb_to_linear(arr[..., :3])
        a = arr[..., 3] if has_alpha else None
        premultiplied = False
    if not np.isfinite(rgb).all():
        raise NearError(f"{p.name} contains NaN or Inf pixels; fix the image and retry.")
    if a is None or float((a > 0.5).mean()) > 0.995:
        raise NearError(
            f"The image {p.name} has no transparent background. Remove the background (e.g. with rembg) "
            "and save it as a PNG/EXR with alpha."
        )
    if float((a > 0.5).mean()) < 1e-4:
        raise NearError(f"The image {p.name} is fully transparent: there is no object in it.")
    if not premultiplied:
        rgb = rgb * a[..., None]
    return np.concatenate([rgb, a[..., None]], -1).astype(np.float32)


def prior_voxels(path: str | Path, up: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(voxel coords ``[N, 3]`` in the 64³ grid, matrix_world or None) of a prior file.

    A mesh prior (see :data:`~near_blender.data.mesh_io.MESH_EXTENSIONS`) is read in Blender's Z-up
    world frame (``up``: its up axis, ``None`` = as Blender's importer for the format) and voxelized
    in its canonical box; matrix_world ``[4, 4]`` maps that box back onto the mesh. An ``.npz`` holds
    the voxel coords themselves (matrix None).
    """
    from ..data.mesh_io import MESH_EXTENSIONS, read_mesh_triangles
    from ..data.voxelize import voxelize_prior

    p = Path(path)
    if not p.is_file():
        raise NearError(f"Geometry prior not found: {p}; check the --prior path.")
    ext = p.suffix.lower()
    if ext == ".npz":
        if up is not None:
            raise NearError(f"--up applies to mesh priors; {p.name} holds voxel coords already in the grid.")
        try:
            with np.load(p, allow_pickle=False) as d:
                c = np.asarray(d["coords"])
        except (KeyError, ValueError, OSError) as e:
            raise NearError(f"{p.name} is not a voxel file with a 'coords' array ({e}).") from None
        if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0 or c.min() < 0 or c.max() >= 64:
            raise NearError(f"{p.name}: 'coords' must be a non-empty [N, 3] array of indices in 0..63.")
        return c.astype(np.int64), None
    if ext not in MESH_EXTENSIONS:
        raise NearError(
            f"Geometry prior {p.name}: unsupported format {ext or '(no extension)'!r}; use a mesh "
            f"({', '.join(MESH_EXTENSIONS)}) or an .npz of voxel coords (e.g. import it into Blender and "
            "export it as glTF)."
        )
    return voxelize_prior(read_mesh_triangles(p, up))


def prior_cloud(path: str, up: str | None):  # -> PriorCloud
    """The prior of ``--prior`` as a point cloud in the camera's (Blender's Z-up) world frame:
    mesh files as they are (after ``--up``), voxel files in their canonical frame."""
    from ..data.camera_fit import cloud_from_triangles, cloud_from_voxels

    if Path(path).suffix.lower() == ".npz":
        coords, matrix = prior_voxels(path)
        return cloud_from_voxels(coords, matrix)
    from ..data.mesh_io import read_mesh_triangles

    return cloud_from_triangles(read_mesh_triangles(path, up))


def input_camera(path: str, rgba: np.ndarray, matrix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(viewmat, K)`` of ``--camera`` for the image ``rgba [H, W, 4]``, moved into the voxels'
    frame (``matrix``: the asset's placement of a mesh prior; None for voxel coords, already in that
    frame); K is scaled from the camera's size to the image's after the aspect-ratio check."""
    from ..render.camera import check_image_size, read_camera_json

    cam = read_camera_json(path)
    H, W = rgba.shape[:2]
    check_image_size(cam, W, H, "pass the camera of the photo (`near fit-camera` writes one), or crop the photo "
                     "to the camera's aspect ratio.")  # fmt: skip
    cam = cam.resized(W, H)
    return (cam.viewmat @ matrix if matrix is not None else cam.viewmat), cam.K


def check_silhouette(args: argparse.Namespace, rgba: np.ndarray) -> None:
    """Refuse a camera that does not frame the prior as the photo does (silhouette IoU below
    :data:`~near_blender.data.camera_fit.GOOD_IOU`), unless ``--no-camera-check``."""
    from ..data.camera_fit import iou_warning, silhouette_iou
    from ..render.camera import read_camera_json

    cam = read_camera_json(args.camera).resized(rgba.shape[1], rgba.shape[0])
    iou = silhouette_iou(prior_cloud(args.prior, args.up), cam, rgba[..., 3])
    warning = iou_warning(iou, f"`near fit-camera {args.image} --prior {args.prior} --camera {args.camera} --out "
                          "fitted.json` (or check --up)")  # fmt: skip
    if warning:
        raise NearError(f"{warning} To import anyway, pass --no-camera-check.")


def run(args: argparse.Namespace) -> int:
    from ..data.slat_io import save_slat_npz
    from ..models.hub import bundled_model_folder
    from ..pipeline import NearPipeline
    from ..utils.atomic import atomic_path
    from ..utils.progress import percent_bar

    rgba = read_rgba(args.image)
    coords, matrix = prior_voxels(args.prior, args.up)
    if args.camera:
        input_camera(args.camera, rgba, matrix)  # a bad file or aspect fails before any work
        if not args.no_camera_check:
            check_silhouette(args, rgba)
    pipe = NearPipeline.from_pretrained(args.model or bundled_model_folder(), device=args.device)
    with percent_bar("near import-image") as progress:
        camera = input_camera(args.camera, rgba, matrix) if args.camera else None
        feats = pipe.image_to_slat(
            rgba, coords, seed=args.seed, steps=args.steps, progress=progress, camera=camera
        )
    out = Path(args.out)
    save_slat_npz(out, coords, feats)
    if matrix is not None:  # the placement next to the SLAT, in the same file
        with np.load(out) as d:
            arrays = dict(d)
        arrays["matrix_world"] = matrix.astype(np.float64)
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    print(f"near import-image: {len(coords)} voxels -> {out}")
    return 0
