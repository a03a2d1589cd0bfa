"""The evaluation's baselines: the analytic Lambertian oracle (bpy-free, CPU, numpy).

* **lambertian** (baseline b, every task): the target view's ground-truth G-buffers (base colour,
  world normal, alpha) shaded as a Lambertian surface under the target environment,
  ``base_colour * E(n) / pi`` (:mod:`near_blender.eval.irradiance`); no shadows, no specular, no
  interreflection. It is an oracle for material and geometry, so it isolates lighting.
* **baked** (baseline a, the two relighting tasks): rendered by Blender, see
  :mod:`near_blender.eval.baked`.
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


def surface_points(view: dict[str, np.ndarray], camera: Camera) -> np.ndarray:
    """World positions ``[H, W, 3]`` of a view's depth pass (distance along the optical axis)."""
    o, d = camera.pixel_rays()
    depth = np.asarray(view["depth"], np.float64)
    if depth.ndim == 3:
        depth = depth[..., 0]
    along = np.maximum(d @ camera.forward, 1e-9)
    return o + d * (depth / along)[..., None]
