"""Environment-map resampling and diffuse irradiance: the one place for the tokenizer input
(:mod:`.conditioning`), the diffuse prior (:func:`.conditioning.radiance_basis`), the dataset's
shadow target (:mod:`near_blender.data.shadow`) and the evaluation baseline
(:mod:`near_blender.eval.irradiance`).

Maps are equirect ``[H, W, 3]`` in the layout of :mod:`near_blender.render.envmap` (Blender world,
Z up, row 0 at the top). Irradiance is ``E(n) = sum_k power_k max(0, n . d_k)``, ``power_k`` the
radiance times solid angle (sr) of a block of texels seen from direction ``d_k``: a constant map
of radiance ``L`` gives ``pi L`` for any normal.

Two resamplings, both keeping the total power ``sum(L * solid_angle)``:

* :func:`downsample_equirect` splits texels by the overlap of their footprints (any sizes): the
  tokenizer's input;
* :func:`block_average` gives whole texels to cells (``uneven`` names what happens when the
  height does not divide the map's): the shadow target and the baseline, whose integration
  directions are the cell centres. The diffuse prior instead works on the tokenizer's input in
  torch, with power-of-two blocks and their mean directions (``conditioning.radiance_basis``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from .. import NearError
from .envmap import pixel_solid_angles, validate_radiance


def _overlap_matrix(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """[n_dst, n_src] fraction of each destination cell covered by each source cell, for
    increasing cell edges in any 1D measure (rows sum to 1)."""
    lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
    hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / (dst_edges[1:] - dst_edges[:-1])[:, None]


def downsample_equirect(image: Any, height: int, width: int | None = None) -> np.ndarray:
    """Resample an equirect map to ``height x width`` (default ``2 * height``), area-preserving.

    Every output pixel is the solid-angle weighted mean of the input over its footprint (box
    filter in longitude, in ``cos(theta)`` over latitude), so the total radiance
    ``sum(E * solid_angle)`` is preserved exactly and a one-texel sun is spread, never dropped.
    Works for any sizes (also upsampling). ``image`` is validated (NaN/Inf/negative -> NearError).
    Returns float32.
    """
    arr = validate_radiance(image, "environment map").astype(np.float64)
    H, W = arr.shape[:2]
    width = 2 * height if width is None else width
    if height < 1 or width < 1:
        raise NearError(f"Conditioning resolution must be positive, got {width}x{height}.")
    # latitude bands in mu = cos(theta) (decreasing from the top): use -cos to get increasing edges
    mu_src = -np.cos(np.linspace(0.0, math.pi, H + 1))
    mu_dst = -np.cos(np.linspace(0.0, math.pi, height + 1))
    Ay = _overlap_matrix(mu_src, mu_dst)  # [height, H]
    Ax = _overlap_matrix(np.linspace(0.0, 1.0, W + 1), np.linspace(0.0, 1.0, width + 1))  # [width, W]
    out = np.einsum("hH,HWc,wW->hwc", Ay, arr, Ax, optimize=True)
    return out.astype(np.float32)


def block_average(
    radiance: np.ndarray, height: int, uneven: Literal["divisor", "floor"] = "divisor"
) -> tuple[np.ndarray, np.ndarray]:
    """Solid-angle weighted mean radiance ``[h, w, 3]`` and solid angle ``[h, w]`` (sr) of cells of
    whole texels: texel ``(j, i)`` goes to cell ``(j h // H, i w // W)``, float64.

    ``uneven="divisor"`` (the baseline): ``h`` is the largest divisor of ``H`` not above
    ``height`` (equal blocks; the map must be 2:1), ``w = 2 h``. ``uneven="floor"`` (the shadow
    target): ``h = height`` and ``w = 2 h`` with cells of unequal texel counts when ``height``
    does not divide ``H``; a map of at most ``height`` rows is kept as it is.
    """
    img = np.asarray(radiance, dtype=np.float64)
    H, W = img.shape[:2]
    if uneven == "divisor":
        if W != 2 * H:
            raise NearError(f"Equirect maps must be twice as wide as tall, got {W}x{H}.")
        h = max(1, min(int(height), H))
        while H % h:
            h -= 1
    elif uneven == "floor":
        h = min(int(height), H)
    else:
        raise NearError(f"uneven must be 'divisor' or 'floor', got {uneven!r}.")
    w = W if h == H else 2 * h
    omega = np.broadcast_to(pixel_solid_angles(H, W), (H, W))
    cell = (((np.arange(H) * h) // H)[:, None] * w + ((np.arange(W) * w) // W)[None, :]).ravel()
    area = np.bincount(cell, weights=omega.ravel(), minlength=h * w)
    power = [np.bincount(cell, weights=(img[..., c] * omega).ravel(), minlength=h * w) for c in range(3)]
    mean = np.stack(power, axis=-1) / np.maximum(area[:, None], 1e-300)
    return mean.reshape(h, w, 3), area.reshape(h, w)


def diffuse_irradiance(normals: Any, dirs: Any, power: Any, chunk: int | None = None) -> Any:
    """``E(n) = sum_k power_k max(0, n . dirs_k)`` ``[M, 3]`` for unit ``normals [M, 3]``,
    directions ``dirs [K, 3]`` (same frame) and ``power [K, 3]`` (radiance x sr). numpy or torch
    (differentiable); ``chunk`` (numpy only) bounds the ``[chunk, K]`` cosine matrix."""
    if chunk is None or len(normals) <= chunk:
        return (normals @ dirs.T).clip(0.0, None) @ power
    parts = [diffuse_irradiance(normals[s : s + chunk], dirs, power) for s in range(0, len(normals), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 3))
