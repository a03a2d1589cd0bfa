"""Area-light rigs of the dataset's input views as environment maps (a distant-light approximation).

The stage-1 input images (``inputs/``) are lit either by a random environment map (mode
``envmap``: used exactly) or by 1-6 square area lights 5-8 m away in a black world (modes
``six_area`` and ``hemisphere_area``, :mod:`near_blender.data.sampling`). Stage 2 and the
Lambertian baseline take an environment map, so an area light is turned into the radiance it
shows from the origin: a patch of radiance ``L = P / (pi A)`` (a one-sided Lambertian emitter of
power ``P`` W and area ``A`` m^2, Blender's convention for area lights; checked against Cycles in
``tests/eval``) covering the solid angle ``A / d^2`` in the light's direction. The square is
splatted as a disc of the same area facing the origin (its in-plane rotation is ignored).

This is exact for a point at the origin and approximate over the asset (the lights are 5-8 m away
and the asset spans 1 m, so the inverse-square falloff varies by up to about +-20 % across it, and
the light's direction by up to ~6 deg); the evaluation reports which inputs were lit this way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import NearError
from ..render.envmap import Environment, direction_to_pixel, pixel_solid_angles

DEFAULT_HEIGHT = 64
_RINGS = 6  # disc sampling: rings x (6 * ring index) samples


def _disc_samples(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Points (x, y) [S, 2] on a disc and their area weights [S] (sum = pi r^2)."""
    pts, w = [np.zeros((1, 2))], [np.ones(1)]
    for k in range(1, _RINGS + 1):
        n = 6 * k
        a = (np.arange(n) + 0.5 * (k % 2)) * 2 * math.pi / n
        r = (k / _RINGS) * radius * (_RINGS / (_RINGS + 0.5))
        pts.append(np.stack([r * np.cos(a), r * np.sin(a)], 1))
        w.append(np.ones(n))
    p, ww = np.concatenate(pts), np.concatenate(w)
    return p, ww / ww.sum() * math.pi * radius**2


def lights_environment(
    lighting: dict[str, Any], height: int = DEFAULT_HEIGHT, name: str = "lights"
) -> Environment:
    """An equirect :class:`Environment` (world-aligned, no rotation) approximating a ``lights``
    lighting record (``{"type": "lights", "world_color", "lights": [...]}``) seen from the origin.

    Supports ``AREA`` lights (``position``, ``power_w``, ``size_m``); the world colour fills the
    background. Radiance units: W / (m^2 sr), as Blender's.
    """
    if lighting.get("type") != "lights":
        raise NearError(f"Not an area-light rig: {lighting.get('type')!r}.")
    H, W = int(height), 2 * int(height)
    img = np.zeros((H, W, 3), np.float64)
    img[:] = np.asarray(lighting.get("world_color", (0.0, 0.0, 0.0)), np.float64)[:3]
    omega = np.broadcast_to(pixel_solid_angles(H, W), (H, W))
    for light in lighting.get("lights", []):
        if light.get("type") != "AREA":
            raise NearError(
                f"Only AREA lights can be turned into an environment map, got {light.get('type')!r}."
            )
        pos = np.asarray(light["position"], np.float64)
        dist = float(np.linalg.norm(pos))
        size = float(light["size_m"])
        area = size * size
        colour = np.asarray(light.get("color", (1.0, 1.0, 1.0)), np.float64)[:3]
        radiance = float(light["power_w"]) / (math.pi * area) * colour
        # disc of equal area, perpendicular to the direction to the origin
        axis = pos / dist
        helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        e1 = np.cross(axis, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(axis, e1)
        xy, dA = _disc_samples(math.sqrt(area / math.pi))
        pts = pos + xy[:, :1] * e1 + xy[:, 1:] * e2
        r2 = (pts**2).sum(1)
        cos_emit = np.abs((pts / np.sqrt(r2)[:, None]) @ axis)  # emitter faces the origin
        d_omega = dA * cos_emit / r2  # solid angle of each sample seen from the origin
        x, y = direction_to_pixel(pts, H, W)
        col = np.mod(np.floor(x).astype(np.int64), W)
        row = np.clip(np.floor(y).astype(np.int64), 0, H - 1)
        for c, r, dw in zip(col, row, d_omega):
            img[r, c] += radiance * dw / omega[r, c]
    return Environment(img.astype(np.float32), 0.0, name)
