"""The evaluation's analytic baselines (bpy-free, CPU, numpy).

* **lambertian** (baseline b, every task): the target view's ground-truth G-buffers (base colour,
  world normal, alpha) shaded as a Lambertian surface under the target environment,
  ``base_colour * E(n) / pi`` (:mod:`near_blender.eval.irradiance`); no shadows, no specular, no
  interreflection. It is an oracle for material and geometry, so it isolates lighting.
* **baked** (baseline a, the two relighting tasks): the input image projected onto the geometry
  prior and used as the base colour, i.e. the classic "texture from the photo" asset with the input
  lighting baked in. CPU approximation of the issue's EEVEE render: the input's scene-linear colour
  (premultiplied, un-premultiplied by alpha, clipped to [0, 1] as a base colour must be) is
  back-projected onto the asset's 64^3 surface voxels with the dataset's depth test
  (:func:`near_blender.data.backproject.accumulate`: voxels the input does not see get the colour of
  the pixel they project into, as a projector would paint them); each target pixel takes the
  colour of the voxel nearest to its ground-truth surface point (depth pass) and is shaded like the
  Lambertian baseline with the target view's normal.
"""

from __future__ import annotations

import numpy as np

from ..data.backproject import Aggregate, accumulate
from ..data.voxelize import GRID, voxel_centres
from ..render.camera import Camera
from ..render.envmap import Environment
from .irradiance import Irradiance, lambertian


def lambertian_view(
    view: dict[str, np.ndarray], env: Environment, irradiance: Irradiance | None = None
) -> np.ndarray:
    """Baseline b: premultiplied HDR ``[H, W, 3]`` from a view file's ``base_color`` and ``normal``."""
    irr = irradiance or Irradiance(env)
    return lambertian(view["base_color"], view["normal"], irr).astype(np.float32)


def bake_input_colours(coords: np.ndarray, view: dict[str, np.ndarray], camera: Camera) -> np.ndarray:
    """Per-voxel base colour ``[N, 3]`` in [0, 1] projected from one input view (``rgba``, ``depth``,
    ``normal``) through ``camera``; ``coords`` are int ``[N, 3]`` indices of the 64^3 grid."""
    rgba = np.asarray(view["rgba"], np.float64)
    agg = Aggregate.empty(len(coords), 3)
    accumulate(agg, coords, camera, rgba[..., :3], view["depth"], rgba[..., 3], view.get("normal"))
    # accumulate divides premultiplied maps by the interpolated alpha: a straight colour results
    colours = agg.mean()
    unseen = (agg.count == 0) & (agg.count_any == 0)
    if unseen.any() and (~unseen).any():  # outside the frame entirely: the mean painted colour
        colours[unseen] = colours[~unseen].mean(axis=0)
    return np.clip(colours, 0.0, 1.0)


def surface_points(view: dict[str, np.ndarray], camera: Camera) -> np.ndarray:
    """World positions ``[H, W, 3]`` of a view's depth pass (distance along the optical axis)."""
    o, d = camera.pixel_rays()
    depth = np.asarray(view["depth"], np.float64)
    if depth.ndim == 3:
        depth = depth[..., 0]
    along = np.maximum(d @ camera.forward, 1e-9)
    return o + d * (depth / along)[..., None]


def nearest_voxel(
    points: np.ndarray, coords: np.ndarray, resolution: int = GRID, chunk: int = 2048
) -> np.ndarray:
    """Index of the voxel (``coords`` int ``[N, 3]``) whose centre is nearest to each point ``[M, 3]``."""
    import torch

    centres = torch.from_numpy(voxel_centres(coords, resolution).astype(np.float32))
    p = torch.from_numpy(np.asarray(points, np.float32).reshape(-1, 3))
    out = torch.empty(len(p), dtype=torch.int64)
    for s in range(0, len(p), chunk):
        out[s : s + chunk] = torch.cdist(p[s : s + chunk], centres).argmin(dim=1)
    return out.numpy()


def baked_view(
    coords: np.ndarray,
    colours: np.ndarray,
    target: dict[str, np.ndarray],
    camera: Camera,
    env: Environment,
    irradiance: Irradiance | None = None,
) -> np.ndarray:
    """Baseline a: premultiplied HDR ``[H, W, 3]`` of the baked asset (voxel ``colours`` ``[N, 3]``)
    at a target view (its ``depth``, ``normal`` and ``rgba`` alpha) under ``env``."""
    alpha = np.asarray(target["rgba"], np.float64)[..., 3]
    H, W = alpha.shape
    albedo = np.zeros((H, W, 3))
    covered = (alpha > 0) & (np.asarray(target["depth"]).reshape(H, W) > 0)
    if covered.any():
        pts = surface_points(target, camera)[covered]
        albedo[covered] = colours[nearest_voxel(pts, coords)]
    albedo *= alpha[..., None]  # premultiplied like the G-buffers
    irr = irradiance or Irradiance(env)
    return lambertian(albedo, target["normal"], irr).astype(np.float32)
