"""Diffuse irradiance from an equirect environment map and Lambertian shading (bpy-free).

Conventions (those of :mod:`near_blender.render.envmap`): Blender world, Z up; an
:class:`~near_blender.render.envmap.Environment` shows in world direction ``d`` the texel that
``Rz(rotation_z) @ d`` addresses. Normals are world-space unit vectors (Blender's Normal pass, as
the dataset's view files store them).

Irradiance ``E(n) = integral L(w) max(0, n . w) dw`` (W/m^2 per unit radiance, i.e. in the map's
radiance units times sr) is integrated directly over the map, downsampled by box filtering with the
exact per-pixel solid angles (:func:`~near_blender.render.irradiance.block_average`) so that the
total radiant power of every block is kept. The clamped-cosine kernel is smooth, so a 32 x 64 map
is accurate to well under 1 % except for tiny, very bright sources near a normal's horizon.

A Lambertian surface of albedo ``rho`` has outgoing radiance ``rho * E / pi``; under a constant
map of radiance ``L`` (``E = pi L``) that is ``rho * L``.
"""

from __future__ import annotations

import math

import numpy as np

from ..render.envmap import Environment, equirect_directions, rotation_z
from ..render.irradiance import block_average, diffuse_irradiance

DEFAULT_HEIGHT = 32


class Irradiance:
    """Irradiance lookups ``E(n)`` for one environment (world-space normals, Z up).

    ``height``: rows of the downsampled map the integral runs over (32 -> 2048 directions).
    """

    def __init__(self, env: Environment, height: int = DEFAULT_HEIGHT) -> None:
        rad, omega = block_average(env.radiance, height)  # uneven="divisor": equal blocks
        h = rad.shape[0]
        tex_dirs = equirect_directions(h, 2 * h).reshape(-1, 3)  # texture-space directions
        # world direction d shows the texel at t = Rz d, so the texel t is seen from d = Rz^T t
        # (as row vectors: d = t @ Rz).
        self.dirs = tex_dirs @ rotation_z(env.rotation_z)  # [K, 3] world
        self.power = (rad * omega[..., None]).reshape(-1, 3)  # [K, 3] radiance * sr

    def __call__(self, normals: np.ndarray, chunk: int = 16384) -> np.ndarray:
        """``E`` [..., 3] for normals [..., 3] (any length > 0; zero vectors give 0)."""
        n = np.asarray(normals, dtype=np.float64)
        shape = n.shape[:-1]
        n = n.reshape(-1, 3)
        length = np.linalg.norm(n, axis=1, keepdims=True)
        n = np.where(length > 1e-8, n / np.maximum(length, 1e-8), 0.0)
        return diffuse_irradiance(n, self.dirs, self.power, chunk).reshape(*shape, 3)


def lambertian(albedo: np.ndarray, normals: np.ndarray, irradiance: Irradiance) -> np.ndarray:
    """Outgoing radiance ``albedo * E(n) / pi`` [..., 3] (no shadows, no specular).

    For premultiplied G-buffers (coverage-weighted base colour and normal, as the view files store
    them) pass them as they are: the normal is re-normalized and the base colour keeps its
    coverage weight, so the result is premultiplied too.
    """
    return np.asarray(albedo, dtype=np.float64) * irradiance(normals) / math.pi
