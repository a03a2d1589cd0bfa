"""Synthetic ground truth for the stage-2 overfit test: a Lambertian sphere under environment maps.

Everything is analytic: the sphere (centre 0, radius ``R``, object box [-0.5, 0.5]^3, Z up) is
convex, so the irradiance at a surface point with normal ``n`` is the full hemisphere integral
``E(n) = sum_pixels L(d) max(0, n . d) dOmega`` over the environment map, and the outgoing
radiance is ``albedo(p) / pi * E(n)``. Images are rendered with s x s supersampling (coverage gives
a soft alpha) and premultiplied over black, like the model's output.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from near_blender.render.conditioning import EnvConditioning
from near_blender.render.envmap import equirect_directions, pixel_solid_angles


def environment(
    height: int, width: int, sun_dir, sun_rgb, sky_rgb, ground_rgb, sun_width: float = 0.35
) -> np.ndarray:
    """A smooth HDR map ``[H, W, 3]``: sky/ground gradient plus a broad coloured 'sun' lobe."""
    d = equirect_directions(height, width)
    s = np.asarray(sun_dir, dtype=np.float64)
    s = s / np.linalg.norm(s)
    t = 0.5 + 0.5 * d[..., 2:3]
    base = t * np.asarray(sky_rgb) + (1 - t) * np.asarray(ground_rgb)
    lobe = np.exp((d @ s - 1.0) / sun_width**2)[..., None] * np.asarray(sun_rgb)
    return (base + lobe).astype(np.float32)


def irradiance(env: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """``E(n)`` ``[..., 3]`` for unit normals ``[..., 3]`` (cosine-weighted sum over the map)."""
    H, W, _ = env.shape
    d = equirect_directions(H, W).reshape(-1, 3)
    w = (env * pixel_solid_angles(H, W)[..., None]).reshape(-1, 3)
    cos = np.clip(normals.reshape(-1, 3) @ d.T, 0.0, None)
    return (cos @ w).reshape(*normals.shape[:-1], 3)


def albedo(p: np.ndarray, radius: float) -> np.ndarray:
    """A smooth two-tone albedo ``[..., 3]`` varying with height and azimuth."""
    z = p[..., 2:3] / radius
    a = np.arctan2(p[..., 1:2], p[..., 0:1])
    return 0.45 + 0.25 * np.concatenate([z, 0.6 * np.cos(a), -z], axis=-1)


def render_sphere(
    env: np.ndarray, radius: float, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, ss: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied radiance ``[H, W, 3]`` and alpha ``[H, W, 1]`` (OpenCV camera, centres at +0.5)."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    c = -R.T @ t
    o = (np.arange(ss) + 0.5) / ss
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    px = (xs[..., None, None] + o[None, None, None, :]).reshape(height, width, -1)
    py = (ys[..., None, None] + o[None, None, :, None]).reshape(height, width, -1)
    cam = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones_like(px)], -1)
    d = cam @ R  # camera -> world (R^T applied to row vectors)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    b = d @ c
    disc = b**2 - (c @ c - radius**2)
    hit = disc > 0
    s = -b - np.sqrt(np.where(hit, disc, 0.0))
    p = c + s[..., None] * d
    n = p / radius
    rad = albedo(p, radius) / math.pi * irradiance(env, n)
    rad = np.where(hit[..., None], rad, 0.0)
    return rad.mean(axis=2).astype(np.float32), hit.mean(axis=2, keepdims=False)[..., None].astype(np.float32)


def conditioning(env: np.ndarray, height: int) -> torch.Tensor:
    """The tokenizer input ``[1, 9, height, 2 height]`` of a map with **world-space** directions (the
    published inference convention: one encoding per environment, shared by every view), built from
    :class:`near_blender.render.conditioning.EnvConditioning` (LDR, log, texel directions)."""
    return EnvConditioning(env, height=height)(np.eye(4)).stacked()[None]  # the identity camera: world axes
