"""The evaluation's baselines: the analytic Lambertian oracle (bpy-free, CPU, numpy).

* **lambertian** (baseline b, every task): the target view's ground-truth G-buffers (base colour,
  world normal, alpha) shaded as a Lambertian surface under the target environment,
  ``base_colour * E(n) / pi`` (:mod:`near_blender.eval.irradiance`); no shadows, no specular, no
  interreflection. It is an oracle for material and geometry, so it isolates lighting.
* **baked** (baseline a, the two relighting tasks): rendered by Blender, see
  :mod:`near_blender.eval.baked`.
* **delit** (the relighting tasks; not an oracle): the input image delit on the geometry prior
  (:mod:`near_blender.data.delighting`: its lighting fitted and divided out, unseen voxels filled),
  the result's base colour looked up per pixel of the target view from the voxel its surface point
  lies in, and shaded as a Lambertian surface under the target environment with the prior's
  normals (the target view's normal pass: the geometry prior is the asset's mesh here). No
  learning but the delighting's linear calibration when the evaluated model has one.
"""

from __future__ import annotations

import numpy as np

from ..render.camera import Camera
from ..render.envmap import Environment
from .irradiance import Irradiance, lambertian


def lambertian_view(
    view: dict[str, np.ndarray], env: Environment, irradiance: Irradiance | None = None
) -> np.ndarray:
    """Baseline b: premultiplied HDR ``[H, W, 3]`` from a view file's ``base_color`` and ``normal``."""
    irr = irradiance or Irradiance(env)
    return lambertian(view["base_color"], view["normal"], irr).astype(np.float32)


def voxel_lookup(points: np.ndarray, coords: np.ndarray, resolution: int = 64) -> np.ndarray:
    """Index ``[...]`` of the voxel of ``coords [N, 3]`` each object-space point ``[..., 3]`` lies in,
    or of an occupied 26-neighbour of that cell when it is empty; -1 when neither is occupied."""
    from ..data.voxelize import NEIGHBOURS_26, VoxelIndex

    index = VoxelIndex(coords)
    cell = np.floor((np.asarray(points, np.float64) + 0.5) * resolution).astype(np.int64)
    out = index.find(cell)
    for off in NEIGHBOURS_26:
        todo = out < 0
        if not todo.any():
            break
        out[todo] = index.find(cell[todo] + off)
    return out


def delit_view(
    view: dict[str, np.ndarray],
    camera: Camera,
    coords: np.ndarray,
    base_color: np.ndarray,
    env: Environment,
    irradiance: Irradiance | None = None,
) -> np.ndarray:
    """The delit baseline: premultiplied HDR ``[H, W, 3]`` of per-voxel ``base_color [N, 3]`` on the
    prior ``coords [N, 3]``, looked up at the surface points of the target ``view`` (depth pass,
    ``camera``) and shaded with its normal pass under ``env``. Pixels whose point falls in no voxel
    (nor next to one) keep the mean base colour."""
    alpha = np.asarray(view["rgba"], np.float64)[..., 3]
    pts = surface_points(view, camera)
    idx = voxel_lookup(pts, coords)
    bc = np.asarray(base_color, np.float64)
    albedo = np.where((idx >= 0)[..., None], bc[np.maximum(idx, 0)], bc.mean(0))
    albedo = np.clip(albedo, 0.0, 1.0) * alpha[..., None]
    irr = irradiance or Irradiance(env)
    return lambertian(albedo, view["normal"], irr).astype(np.float32)


def surface_points(view: dict[str, np.ndarray], camera: Camera) -> np.ndarray:
    """World positions ``[H, W, 3]`` of a view's depth pass (distance along the optical axis)."""
    o, d = camera.pixel_rays()
    depth = np.asarray(view["depth"], np.float64)
    if depth.ndim == 3:
        depth = depth[..., 0]
    along = np.maximum(d @ camera.forward, 1e-9)
    return o + d * (depth / along)[..., None]
