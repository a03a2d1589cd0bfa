"""One input image lifted onto the geometry prior's voxels: the projected ``Z_s`` of stage 1.

The paper's homogenizer reads ``Z_s``, the shaded SLAT that TRELLIS's flow produces from the input
image: the image's (lit) appearance on the asset's voxels. A tiny CPU flow cannot learn which image
patch lands on which voxel without the camera, so the default model can instead read the input
image *projected* onto the voxels through its camera (``zs_source: "projection"`` in the stage-1
config). Features per voxel, 8 channels:

====  ==============  ===============================================================================
ch    name            value
====  ==============  ===============================================================================
0-2   colour          un-premultiplied scene-linear RGB of the pixel the voxel centre projects into,
                      for voxels the camera sees (within ``tolerance`` voxels plus two pixel
                      footprints of the front-most voxel over their pixel, each voxel covering
                      the pixels of its projected footprint; the pixel covered: alpha > 0.5);
                      0 elsewhere
3     seen            1 for those voxels, else 0
4-6   view direction  unit vector from the voxel centre towards the camera centre (object space)
7     occlusion       how far behind the front-most voxel of its pixel the voxel lies, in voxels,
                      clipped to [0, 8] (0 on the visible surface; 8 far behind or off-image)
====  ==============  ===============================================================================

Conventions: voxel ``c`` (ints in 0..res-1) has its centre at ``(c + 0.5) / res - 0.5`` in the
asset's object space (the unit cube, Z up); ``viewmat`` maps object space to the OpenCV camera
(x right, y down, z forward) and may carry a uniform scale (a camera in a scaled asset's frame);
``K`` is in pixels of the image given (pixel centres at +0.5). bpy-free numpy.
"""

from __future__ import annotations

import numpy as np

from .. import NearError

CHANNELS = 8
MAX_OCCLUSION = 8.0


MAX_SPLAT = 4  # pixels: the widest a voxel's depth is splatted into the depth buffer


def front_depth(
    px: np.ndarray, py: np.ndarray, z: np.ndarray, inside: np.ndarray, voxel_fx: float, W: int, H: int
) -> np.ndarray:
    """``[H * W]`` depth of the front-most voxel over each pixel (inf where none). Each voxel (pixel
    ``(px, py)``, depth ``z``) covers the pixels within its projected half-diagonal,
    ``sqrt(3) / 2 * voxel_fx / z`` (``voxel_fx``: voxel size times the focal length in pixels), so
    that a surface whose voxels are more than a pixel apart on screen still hides what lies behind
    it (voxel centres alone leave holes through which back faces would count as seen)."""
    zbuf = np.full(H * W, np.inf)
    radius = np.where(inside, 0.866 * voxel_fx / np.where(inside, z, 1.0), 0.0)
    reach = int(min(np.ceil(radius.max(initial=0.0)), MAX_SPLAT))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            qx, qy = px + dx, py + dy
            m = inside & (dx * dx + dy * dy <= np.maximum(radius, 0.5) ** 2)
            m &= (qx >= 0) & (qx < W) & (qy >= 0) & (qy < H)
            np.minimum.at(zbuf, (qy * W + qx)[m], z[m])
    return zbuf


def project_image_features(
    rgba: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
    coords: np.ndarray,
    resolution: int = 64,
    tolerance: float = 1.5,
) -> np.ndarray:
    """``[N, 8]`` float32 features (module docstring) of ``rgba [H, W, 4]`` (premultiplied) on
    ``coords [N, 3]`` seen through ``viewmat [4, 4]`` and ``K [3, 3]``."""
    img = np.asarray(rgba, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 4:
        raise NearError(f"The input image must be RGBA [H, W, 4]; got {img.shape}.")
    V, Km = np.asarray(viewmat, np.float64), np.asarray(K, np.float64)
    if V.shape != (4, 4) or Km.shape != (3, 3):
        raise NearError(f"The camera must be a 4x4 viewmat and a 3x3 K; got {V.shape} and {Km.shape}.")
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
        raise NearError(f"coords must be a non-empty [N, 3] array of voxel indices; got {c.shape}.")
    H, W = img.shape[:2]
    centres = (c.astype(np.float64) + 0.5) / resolution - 0.5
    cam = centres @ V[:3, :3].T + V[:3, 3]
    scale = float(np.cbrt(abs(np.linalg.det(V[:3, :3]))))  # camera units per object unit
    z = cam[:, 2]
    front = z > 1e-6
    u = np.where(front, Km[0, 0] * cam[:, 0] / np.where(front, z, 1) + Km[0, 2], -1.0)
    v = np.where(front, Km[1, 1] * cam[:, 1] / np.where(front, z, 1) + Km[1, 2], -1.0)
    px, py = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = front & (px >= 0) & (px < W) & (py >= 0) & (py < H)
    flat = np.where(inside, py * W + px, 0)
    voxel = scale / resolution  # one voxel in camera units
    zbuf = front_depth(px, py, z, inside, voxel * float(Km[0, 0]), W, H)
    behind = np.where(inside, (z - zbuf[flat]) / voxel, np.inf)  # in voxels
    # several surface voxels share a pixel when a pixel spans more than a voxel; at grazing angles
    # their depths differ by up to about two pixel footprints, which must not count as occlusion
    pixel = np.where(inside, z / max(float(Km[0, 0]), 1e-9) / voxel, 0.0)  # pixel footprint in voxels
    alpha = img[..., 3].reshape(-1)
    covered = inside & (alpha[flat] > 0.5)
    seen = covered & (behind <= tolerance + 2.0 * pixel)
    rgb = img[..., :3].reshape(-1, 3)[flat] / np.maximum(alpha[flat], 1e-6)[:, None]
    out = np.zeros((len(c), CHANNELS), np.float64)
    out[seen, 0:3] = np.maximum(rgb[seen], 0.0)
    out[:, 3] = seen
    eye = -V[:3, :3].T @ V[:3, 3] / scale**2  # camera centre in object space (V = s R)
    to_eye = eye - centres
    out[:, 4:7] = to_eye / np.maximum(np.linalg.norm(to_eye, axis=1, keepdims=True), 1e-12)
    out[:, 7] = np.clip(np.nan_to_num(behind, posinf=MAX_OCCLUSION), 0.0, MAX_OCCLUSION)
    return out.astype(np.float32)
