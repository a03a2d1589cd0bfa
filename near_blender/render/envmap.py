"""Environment maps: the one environment convention of the stack.

Layout (Cycles/EEVEE's equirectangular mapping, world Z up):

* an image is float32 ``[H, W, 3]`` scene-linear Rec.709 radiance, row 0 at the **top** (as image
  files store it; Blender's own pixel buffers are bottom row first and are flipped on the way in);
* texture coordinates ``(u, v)`` have ``v`` measured from the image bottom, as in Blender;
* a world direction ``d`` looks up ``u = 0.5 - atan2(d.y, d.x) / (2 pi)``,
  ``v = 1 - acos(d.z) / pi`` (so the image centre looks along +X, ``u = 0.25`` along +Y, the top
  row is straight up);
* pixel (col i, row j) has its centre at ``u = (i + 0.5) / W``, ``v = 1 - (j + 0.5) / H``.

Rotation follows Blender's Mapping node (type Point/Vector) on the world's texture coordinate: an
:class:`Environment` with ``rotation_z = a`` shows, in world direction ``d``, the image texel that
direction ``Rz(a) @ d`` addresses. The stack never resamples the image to rotate it: rotation acts
on directions (the paper's lighting tokenizer sees it through its direction channels);
:func:`rotate_equirect` exists for baselines and tests that need the rotated pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import NearError

# ---------------------------------------------------------------------------------------------
# Directions <-> texture coordinates <-> pixels
# ---------------------------------------------------------------------------------------------


def direction_to_uv(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World directions [..., 3] (any length > 0) -> (u, v) in [0, 1], v from the bottom."""
    d = np.asarray(d, dtype=np.float64)
    n = np.linalg.norm(d, axis=-1)
    u = 0.5 - np.arctan2(d[..., 1], d[..., 0]) / (2 * math.pi)
    v = 1.0 - np.arccos(np.clip(d[..., 2] / np.maximum(n, 1e-300), -1.0, 1.0)) / math.pi
    return np.mod(u, 1.0), v


def uv_to_direction(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Texture coordinates (u, v from the bottom) -> unit world directions [..., 3]."""
    phi = math.pi - 2 * math.pi * np.asarray(u, dtype=np.float64)
    theta = math.pi * (1.0 - np.asarray(v, dtype=np.float64))
    st = np.sin(theta)
    return np.stack([st * np.cos(phi), st * np.sin(phi), np.cos(theta)], axis=-1)


def direction_to_pixel(d: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """World directions -> continuous pixel coords (x right, y down from the top; centres at +0.5)."""
    u, v = direction_to_uv(d)
    return u * width, (1.0 - v) * height


def pixel_to_direction(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    """Continuous pixel coords (x, y from the top-left corner) -> unit world directions."""
    return uv_to_direction(np.asarray(x) / width, 1.0 - np.asarray(y) / height)


def equirect_directions(height: int, width: int) -> np.ndarray:
    """Unit world direction of every pixel centre, [H, W, 3] float64 (row 0 = top)."""
    y, x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return pixel_to_direction(x, y, height, width)


def pixel_solid_angles(height: int, width: int) -> np.ndarray:
    """Exact solid angle (sr) of each pixel row, [H, 1]; sums (times W) to 4 pi."""
    edges = np.linspace(0.0, math.pi, height + 1)
    return ((np.cos(edges[:-1]) - np.cos(edges[1:])) * (2 * math.pi / width))[:, None]


def rotation_z(angle: float) -> np.ndarray:
    """[3, 3] rotation about world +Z by ``angle`` radians (counter-clockwise seen from above)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Sampling and resampling
# ---------------------------------------------------------------------------------------------


def sample_equirect(image: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Bilinearly sample ``image`` [H, W, C] in world directions ``d`` [..., 3] -> [..., C].

    Wraps around in u (longitude) and clamps in v, like Blender's Environment Texture (Linear).
    """
    H, W = image.shape[:2]
    x, y = direction_to_pixel(d, H, W)
    x = x - 0.5
    y = np.clip(y - 0.5, 0.0, H - 1.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), H - 2) if H > 1 else np.zeros_like(x0)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None] if H > 1 else np.zeros_like(fx)
    x0w, x1w = np.mod(x0, W), np.mod(x0 + 1, W)
    y1 = np.minimum(y0 + 1, H - 1)
    top = image[y0, x0w] * (1 - fx) + image[y0, x1w] * fx
    bot = image[y1, x0w] * (1 - fx) + image[y1, x1w] * fx
    return (top * (1 - fy) + bot * fy).astype(image.dtype, copy=False)


def rotate_equirect(image: np.ndarray, angle: float) -> np.ndarray:
    """Pixels of the map as seen through a Mapping rotation of ``angle`` about Z.

    Returns ``out`` with ``out(d) = image(Rz(angle) @ d)``. A Z rotation is a longitude shift: every
    row is shifted by ``angle / (2 pi) * W`` columns with linear interpolation (periodic), which keeps
    each row's total radiance exactly.
    """
    H, W = image.shape[:2]
    shift = angle / (2 * math.pi) * W  # out[c] = image[c - shift] (u_lookup = u - angle / 2pi)
    k = math.floor(shift)
    f = shift - k
    a = np.roll(image, k, axis=1)
    b = np.roll(image, k + 1, axis=1)
    return (a * (1.0 - f) + b * f).astype(image.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


NEGATIVE_TOLERANCE = 0.01  # radiance; see validate_radiance


def validate_radiance(image: Any, where: str = "environment map") -> np.ndarray:
    """Check an HDR map and return it as float32 ``[H, W, 3]``; raise :class:`NearError` if bad.

    Accepts ``[H, W, 3]`` or ``[H, W, 4]`` (alpha dropped). Rejects other shapes, maps that are not
    2:1, NaN or Inf values and clearly negative radiance (naming how many there are and the fix).
    Slightly negative values, which lossy HDR encodings leave behind (Blender's own bundled studio
    HDRIs have hundreds, down to -0.0022), are clamped to 0: anything no lower than
    ``-NEGATIVE_TOLERANCE``.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise NearError(f"The {where} must be an [H, W, 3] image, got shape {tuple(arr.shape)}.")
    arr = arr[..., :3].astype(np.float32, copy=False)
    H, W = arr.shape[:2]
    if H < 1 or W != 2 * H:
        raise NearError(
            f"The {where} is {W}x{H}; an equirectangular (lat-long) map must be twice as wide as "
            "tall (e.g. 1024x512). Use a lat-long HDRI, not a cube map or a cropped image."
        )
    nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    fix = "Re-export the HDRI, or clean it with near_blender.render.envmap.sanitize_radiance()."
    if nan or inf:
        raise NearError(f"The {where} has {nan} NaN and {inf} Inf values; HDR radiance must be finite. {fix}")
    low = float(arr.min()) if arr.size else 0.0
    if low < 0:
        if low < -NEGATIVE_TOLERANCE:
            neg = int((arr < 0).sum())
            raise NearError(
                f"The {where} has {neg} negative values (down to {low:.4g}); HDR radiance must be "
                f"non-negative. {fix}"
            )
        arr = np.maximum(arr, 0.0)
    return arr


def sanitize_radiance(image: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Documented repair for broken HDR data: NaN -> 0, +Inf -> the largest finite value,
    -Inf and negatives -> 0. Returns the clean float32 map and the counts that were changed."""
    arr = np.asarray(image, dtype=np.float32)[..., :3].copy()
    counts = {
        "nan": int(np.isnan(arr).sum()),
        "posinf": int(np.isposinf(arr).sum()),
        "neginf": int(np.isneginf(arr).sum()),
        "negative": int((arr < 0).sum()),
    }
    finite = arr[np.isfinite(arr)]
    top = float(finite.max()) if finite.size else 0.0
    arr[np.isnan(arr)] = 0.0
    arr[np.isposinf(arr)] = max(top, 0.0)
    arr[np.isneginf(arr)] = 0.0
    np.maximum(arr, 0.0, out=arr)
    return arr, counts


# ---------------------------------------------------------------------------------------------
# The Environment value object
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """An HDR environment: an equirect radiance map plus a Mapping-node Z rotation.

    Attributes:
        radiance: float32 ``[H, W, 3]`` (W = 2H), scene-linear, strength already applied, top row
            first.
        rotation_z: radians; world direction ``d`` shows the texel addressed by ``Rz(rotation_z) d``.
        name: where it came from (file or world name), for messages and metadata.
    """

    radiance: np.ndarray
    rotation_z: float = 0.0
    name: str = "environment"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "radiance", validate_radiance(self.radiance, f"environment {self.name!r}"))
        if not math.isfinite(self.rotation_z):
            raise NearError(f"Environment {self.name!r} has a non-finite rotation.")

    @property
    def height(self) -> int:
        return int(self.radiance.shape[0])

    @property
    def width(self) -> int:
        return int(self.radiance.shape[1])

    @classmethod
    def uniform(cls, color: Any = (1.0, 1.0, 1.0), height: int = 16, name: str = "uniform") -> Environment:
        """A constant map (a plain-colour world; radiance 1 is the paper's homogenized light)."""
        c = np.asarray(color, dtype=np.float32).reshape(-1)
        if c.size == 1:
            c = np.repeat(c, 3)
        img = np.broadcast_to(c[:3], (height, 2 * height, 3)).copy()
        return cls(img, 0.0, name)

    def with_rotation(self, rotation_z: float) -> Environment:
        return Environment(self.radiance, float(rotation_z), self.name, dict(self.meta))

    def scaled(self, strength: float) -> Environment:
        if not (math.isfinite(strength) and strength >= 0):
            raise NearError(f"Environment strength must be finite and >= 0, got {strength}.")
        return Environment(self.radiance * np.float32(strength), self.rotation_z, self.name, dict(self.meta))

    def lookup_directions(self, d: np.ndarray) -> np.ndarray:
        """Texture-space directions that world directions ``d`` [..., 3] address (``Rz d``)."""
        return np.asarray(d, dtype=np.float64) @ rotation_z(self.rotation_z).T

    def radiance_at(self, d: np.ndarray) -> np.ndarray:
        """Radiance [..., 3] arriving from world directions ``d`` [..., 3] (bilinear)."""
        return sample_equirect(self.radiance, self.lookup_directions(d))

    def baked(self) -> np.ndarray:
        """The radiance map with the rotation applied to its pixels (world-aligned), [H, W, 3]."""
        if self.rotation_z == 0.0:
            return self.radiance
        return rotate_equirect(self.radiance, self.rotation_z)
