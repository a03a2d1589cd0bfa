"""Diffuse irradiance from an equirect environment map and Lambertian shading (bpy-free).

Conventions (those of :mod:`near_blender.render.envmap`): Blender world, Z up; an
:class:`~near_blender.render.envmap.Environment` shows in world direction ``d`` the texel that
``Rz(rotation_z) @ d`` addresses. Normals are world-space unit vectors (Blender's Normal pass, as
the dataset's view files store them).

Irradiance ``E(n) = integral L(w) max(0, n . w) dw`` (W/m^2 per unit radiance, i.e. in the map's
radiance units times sr) is integrated directly over the map, downsampled by box filtering with the
exact per-pixel solid angles (:func:`~near_blender.render.envmap.pixel_solid_angles`) so that the
total radiant power of every block is kept. The clamped-cosine kernel is smooth, so a 32 x 64 map
is accurate to well under 1 % except for tiny, very bright sources near a normal's horizon.

A Lambertian surface of albedo ``rho`` has outgoing radiance ``rho * E / pi``; under a constant
map of radiance ``L`` (``E = pi L``) that is ``rho * L``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import NearError
from ..render.envmap import Environment, equirect_directions, pixel_solid_angles, rotation_z

DEFAULT_HEIGHT = 32


def downsample_equirect(radiance: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Box-filter an equirect map ``[H, W, 3]`` (W = 2H) to ``height`` rows, weighting by solid angle.

    Returns ``(radiance [h, 2h, 3], solid_angle [h, 2h])`` with ``sum(L * dw)`` equal to the
    original map's. ``height`` is clipped to ``H``; when it does not divide ``H`` the map is first
    reduced to the largest divisor of ``H`` not above ``height``.
    """
    img = np.asarray(radiance, dtype=np.float64)
    H, W = img.shape[:2]
    if W != 2 * H:
        raise NearError(f"Equirect maps must be twice as wide as tall, got {W}x{H}.")
    h = max(1, min(int(height), H))
    while H % h:
        h -= 1
    f = H // h
    w_row = pixel_solid_angles(H, W)[:, 0]  # [H] sr per pixel of each row
    weighted = img * w_row[:, None, None]
    num = weighted.reshape(h, f, 2 * h, f, 3).sum(axis=(1, 3))
    omega = np.broadcast_to(w_row[:, None], (H, W)).reshape(h, f, 2 * h, f).sum(axis=(1, 3))
    return num / np.maximum(omega[..., None], 1e-300), omega


class Irradiance:
    """Irradiance lookups ``E(n)`` for one environment (world-space normals, Z up).

    ``height``: rows of the downsampled map the integral runs over (32 -> 2048 directions).
    """

    def __init__(self, env: Environment, height: int = DEFAULT_HEIGHT) -> None:
        rad, omega = downsample_equirect(env.radiance, height)
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
        out = np.empty((len(n), 3))
        for s in range(0, len(n), chunk):
            cos = np.clip(n[s : s + chunk] @ self.dirs.T, 0.0, None)  # [M, K]
            out[s : s + chunk] = cos @ self.power
        return out.reshape(*shape, 3)


def lambertian(albedo: np.ndarray, normals: np.ndarray, irradiance: Irradiance) -> np.ndarray:
    """Outgoing radiance ``albedo * E(n) / pi`` [..., 3] (no shadows, no specular).

    For premultiplied G-buffers (coverage-weighted base colour and normal, as the view files store
    them) pass them as they are: the normal is re-normalized and the base colour keeps its
    coverage weight, so the result is premultiplied too.
    """
    return np.asarray(albedo, dtype=np.float64) * irradiance(normals) / math.pi
