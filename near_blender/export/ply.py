"""3D Gaussian Splatting ``.ply`` files, read and written with ``plyfile``.

The standard layout (the reference 3DGS implementation's ``save_ply``): one ``vertex`` element, one
float32 property per value, binary little-endian, in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{3 n - 1}  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

``f_dc`` is the degree-0 SH coefficient (colour = 0.5 + C0 f_dc), ``f_rest`` the higher ones,
channel-major (all of red's n = (degree + 1)^2 - 1 coefficients, then green's, then blue's),
``opacity`` the logit of the opacity, ``scale_i`` the log of the standard deviations, ``rot`` the
rotation quaternion, w first. With ``pbr=True`` five more float32 properties follow:
``base_color_0 base_color_1 base_color_2 roughness metallic``. Positions are in Blender's world
frame (Z up, metres); the comments say the colour space (:mod:`.splats`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .. import NearError
from .splats import COLOR_SPACES, MAX_SH_DEGREE, SplatCloud

HEAD = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
TAIL = ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
PBR = ("base_color_0", "base_color_1", "base_color_2", "roughness", "metallic")
COLOR_SPACE_COMMENT = "near_color_space"
OPACITY_MAX = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # logit stays finite


def ply_fields(degree: int, pbr: bool = False) -> list[str]:
    """The vertex property names, in file order, for SH ``degree`` (0-3) and optional PBR."""
    n = 3 * ((degree + 1) ** 2 - 1)
    return [*HEAD, *(f"f_rest_{i}" for i in range(n)), *TAIL, *(PBR if pbr else ())]


def write_splat_ply(path: str | os.PathLike[str], cloud: SplatCloud, pbr: bool = False) -> Path:
    """Write ``cloud`` as a 3DGS ``.ply`` (binary, float32), atomically: a reader never sees a
    partial file, and an error leaves ``path`` as it was."""
    from plyfile import PlyData, PlyElement

    from ..utils.atomic import atomic_path

    path = Path(path)
    M, degree = len(cloud), cloud.degree
    columns = {"x": cloud.means[:, 0], "y": cloud.means[:, 1], "z": cloud.means[:, 2]}
    columns |= {"nx": cloud.normals[:, 0], "ny": cloud.normals[:, 1], "nz": cloud.normals[:, 2]}
    columns |= {f"f_dc_{c}": cloud.sh[:, 0, c] for c in range(3)}
    rest = cloud.sh[:, 1:, :].transpose(0, 2, 1).reshape(M, -1)  # channel-major, as 3DGS
    columns |= {f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])}
    o = np.clip(cloud.opacities.astype(np.float64), 1e-7, OPACITY_MAX)
    columns["opacity"] = np.log(o) - np.log1p(-o)
    log_s = np.log(np.maximum(cloud.scales.astype(np.float64), 1e-30))
    columns |= {f"scale_{i}": log_s[:, i] for i in range(3)}
    q = cloud.quats / np.maximum(np.linalg.norm(cloud.quats, axis=-1, keepdims=True), 1e-12)
    columns |= {f"rot_{i}": q[:, i] for i in range(4)}
    if pbr:
        columns |= {f"base_color_{c}": cloud.base_color[:, c] for c in range(3)}
        columns |= {"roughness": cloud.roughness, "metallic": cloud.metallic}
    names = ply_fields(degree, pbr)
    vertex = np.empty(M, dtype=[(n, "<f4") for n in names])
    for n in names:
        vertex[n] = columns[n]
    comments = [
        "near-blender: 3D Gaussians of a NeAR asset, Blender world frame (Z up, metres)",
        f"{COLOR_SPACE_COMMENT} {cloud.color_space}",
    ]
    data = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<", comments=comments)
    with atomic_path(path) as tmp:
        data.write(str(tmp))
    return path


def read_splat_ply(path: str | os.PathLike[str]) -> SplatCloud:
    """A 3DGS ``.ply`` (ours or another tool's: any SH degree 0-3, PBR properties optional) as a
    :class:`SplatCloud`; opacities through the sigmoid, scales through exp, quaternions normalized."""
    from plyfile import PlyData

    path = Path(path)
    try:
        data = PlyData.read(str(path))
    except (OSError, ValueError, IndexError, TypeError) as e:  # plyfile's PlyParseError is a ValueError
        raise NearError(f"Cannot read {path} as a PLY file: {e}") from None
    if "vertex" not in [el.name for el in data.elements]:
        raise NearError(f"{path.name}: no 'vertex' element; not a 3D Gaussian Splatting file.")
    v = data["vertex"].data
    names = set(v.dtype.names or ())
    missing = [n for n in (*HEAD, *TAIL) if n not in names]
    if missing:
        raise NearError(f"{path.name}: not a 3D Gaussian Splatting file (no {', '.join(missing)}).")
    n_rest = sum(1 for n in names if n.startswith("f_rest_"))
    degree = round(math.sqrt(n_rest // 3 + 1)) - 1
    if n_rest % 3 or (degree + 1) ** 2 - 1 != n_rest // 3 or degree > MAX_SH_DEGREE:
        raise NearError(f"{path.name}: {n_rest} f_rest properties is no SH degree 0-{MAX_SH_DEGREE}.")

    def cols(*keys: str) -> np.ndarray:
        return np.stack([np.asarray(v[k], np.float64) for k in keys], axis=-1)

    M = len(v)
    sh = np.zeros((M, (degree + 1) ** 2, 3))
    sh[:, 0] = cols("f_dc_0", "f_dc_1", "f_dc_2")
    if n_rest:
        rest = cols(*(f"f_rest_{i}" for i in range(n_rest)))
        sh[:, 1:] = rest.reshape(M, 3, -1).transpose(0, 2, 1)
    q = cols("rot_0", "rot_1", "rot_2", "rot_3")
    has_pbr = all(n in names for n in PBR)
    space = "linear"
    for c in data.comments:
        if c.startswith(COLOR_SPACE_COMMENT + " ") and c.split()[-1] in COLOR_SPACES:
            space = c.split()[-1]

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    return SplatCloud(
        means=f32(cols("x", "y", "z")),
        normals=f32(cols("nx", "ny", "nz")),
        quats=f32(q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)),
        scales=f32(np.exp(cols("scale_0", "scale_1", "scale_2"))),
        opacities=f32(1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float64)))),
        sh=f32(sh),
        base_color=f32(cols(*PBR[:3]) if has_pbr else np.zeros((M, 3))),
        roughness=f32(v["roughness"] if has_pbr else np.zeros(M)),
        metallic=f32(v["metallic"] if has_pbr else np.zeros(M)),
        color_space=space,
    )


__all__ = ["PBR", "ply_fields", "read_splat_ply", "write_splat_ply"]
