"""The shadow G-buffer of environment-lit views, from one render (both EEVEE Next and Cycles).

Definition: the fraction of the *unoccluded* diffuse irradiance that actually reaches a surface
point,

    shadow = lum(D) / lum(E(n) / pi),    E(n) = integral L_env(w) max(0, n . w) dw,

where ``D`` is the renderer's diffuse lighting pass (Cycles: Diffuse Direct + Diffuse Indirect;
EEVEE Next: Diffuse Light), which is the diffuse radiance divided by the diffuse colour (so a
Lambertian point that sees the whole environment has ``D = E(n) / pi``), and ``n`` is the world
normal of the Normal pass. 1 means fully lit (nothing blocks the sky), 0 fully shadowed; light
bounced off the asset itself can push the raw ratio above 1, values are clipped to [0, 1].

``shadow_weight`` is 1 where the ratio is defined and 0 elsewhere: background, partially covered
edge pixels, and surfaces without a diffuse component (pure metals: the renderer writes no diffuse
light there). Stage-2 training weights its shadow loss by it.

Caveat: EEVEE Next lights diffuse surfaces from a low-order spherical-harmonics projection of the
world, so on EEVEE the ratio also carries that approximation (a few percent for smooth HDRIs);
Cycles integrates the environment exactly (up to sampling noise).
"""

from __future__ import annotations

import math

import numpy as np

from ..render.envmap import Environment, equirect_directions, pixel_solid_angles, sample_equirect
from ..render.irradiance import block_average, diffuse_irradiance

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)  # Rec.709
_MAP_HEIGHT = 32  # irradiance map resolution (irradiance is very smooth)
_SOURCE_HEIGHT = 64  # environment is area-averaged to this height before integration


def irradiance_map(radiance: np.ndarray, height: int = _MAP_HEIGHT) -> np.ndarray:
    """Unoccluded irradiance ``E(n)`` [height, 2 height, 3] for normals at the pixel centres of an
    equirect grid (same layout as the environment: texture space, no rotation), integrated over the
    map's ``block_average(..., 64, uneven="floor")`` cells (:mod:`near_blender.render.irradiance`)."""
    src, _ = block_average(radiance, _SOURCE_HEIGHT, uneven="floor")
    h, w = src.shape[:2]
    dirs = equirect_directions(h, w).reshape(-1, 3)
    weighted = (src * pixel_solid_angles(h, w)[..., None]).reshape(-1, 3)  # mean L x nominal texel sr
    normals = equirect_directions(height, 2 * height).reshape(-1, 3)
    return diffuse_irradiance(normals, dirs, weighted, chunk=256).reshape(height, 2 * height, 3)


def irradiance_at(env: Environment, normals: np.ndarray, emap: np.ndarray | None = None) -> np.ndarray:
    """``E(n)`` [..., 3] for world normals [..., 3] under ``env`` (its Z rotation included).

    ``emap`` is ``irradiance_map(env.radiance)`` (pass it to reuse it across views).
    """
    if emap is None:
        emap = irradiance_map(env.radiance)
    return sample_equirect(emap, env.lookup_directions(normals))


def shadow_from_passes(
    diffuse_light: np.ndarray,
    normal: np.ndarray,
    diffuse_color: np.ndarray,
    alpha: np.ndarray,
    env: Environment,
    emap: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(shadow [H, W], shadow_weight [H, W]) float32 from one render's passes (module docstring)."""
    n = np.asarray(normal, dtype=np.float64)
    length = np.linalg.norm(n, axis=-1)
    unit = n / np.maximum(length, 1e-8)[..., None]
    e = irradiance_at(env, unit, emap) @ LUMA / math.pi
    d = np.asarray(diffuse_light, dtype=np.float64) @ LUMA
    weight = (
        (np.asarray(alpha) > 0.999)
        & (length > 0.5)
        & (np.asarray(diffuse_color, dtype=np.float64) @ LUMA > 0.01)
        & (e > 1e-4)
    )
    ratio = np.where(weight, d / np.maximum(e, 1e-8), 1.0)
    return np.clip(ratio, 0.0, 1.0).astype(np.float32), weight.astype(np.float32)
