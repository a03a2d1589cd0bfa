"""An independent brute-force Gaussian rasterizer in float64 numpy (test helper only).

Every pixel is tested against every Gaussian and composited sequentially in depth order, following
gsplat 1.5's CUDA kernels rule by rule. It shares no code with ``near_blender.render`` on purpose.
"""

from __future__ import annotations

import math

import numpy as np


def _rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a w,x,y,z quaternion via the Rodrigues-style formula."""
    q = q / np.linalg.norm(q)
    w, v = q[0], q[1:]
    cross = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return (w * w - v @ v) * np.eye(3) + 2.0 * np.outer(v, v) + 2.0 * w * cross


def reference_rasterize(
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    features: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    background: np.ndarray | None = None,
    antialiased: bool = False,
    ortho: bool = False,
    eps2d: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One camera. Returns (features [H, W, D], alpha [H, W, 1], expected depth [H, W, 1])."""
    means = np.asarray(means, np.float64)
    feats = np.asarray(features, np.float64)
    camera = (viewmat, K, width, height, near, far, ortho, eps2d, antialiased)
    splats = []
    for n in range(means.shape[0]):
        splat = _project_splat(n, means[n], quats[n], scales[n], float(opacities[n]), *camera)
        if splat is not None:
            splats.append(splat)
    splats.sort(key=lambda s: (s[0], s[1]))
    acc, T, acc_z = _composite(splats, feats, width, height)
    alpha_img = 1.0 - T
    if background is not None:
        acc = acc + T[..., None] * np.asarray(background, np.float64)
    depth = acc_z / np.maximum(alpha_img, 1e-10)
    return acc, alpha_img[..., None], depth[..., None]


def _screen_jacobian(
    pc: np.ndarray, K: np.ndarray, width: int, height: int, ortho: bool
) -> tuple[float, float, np.ndarray]:
    """Pixel centre (u, v) of a camera-space point and the projection's 2x3 Jacobian there
    (pinhole: x/z and y/z clamped to 1.3x the field of view, as gsplat does)."""
    x, y, z = pc
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if ortho:
        return fx * x + cx, fy * y + cy, np.array([[fx, 0.0, 0.0], [0.0, fy, 0.0]])
    limx_p = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    limx_n = cx / fx + 0.3 * (0.5 * width / fx)
    limy_p = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    limy_n = cy / fy + 0.3 * (0.5 * height / fy)
    xs = z * min(max(x / z, -limx_n), limx_p)
    ys = z * min(max(y / z, -limy_n), limy_p)
    J = np.array([[fx / z, 0.0, -fx * xs / z**2], [0.0, fy / z, -fy * ys / z**2]])
    return fx * x / z + cx, fy * y / z + cy, J


def _tile_box(u: float, v: float, rx: int, ry: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The 16-pixel tiles ``(x0, x1, y0, y1)`` (end exclusive) that the extent box touches."""
    tiles_x, tiles_y = math.ceil(width / 16), math.ceil(height / 16)
    return (
        min(max(math.floor((u - rx) / 16), 0), tiles_x),
        min(max(math.ceil((u + rx) / 16), 0), tiles_x),
        min(max(math.floor((v - ry) / 16), 0), tiles_y),
        min(max(math.ceil((v + ry) / 16), 0), tiles_y),
    )


def _project_splat(
    n: int,
    mean: np.ndarray,
    quat: np.ndarray,
    scale: np.ndarray,
    op: float,
    viewmat: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    near: float,
    far: float,
    ortho: bool,
    eps2d: float,
    antialiased: bool,
) -> tuple | None:
    """Gaussian ``n`` as a splat ``(depth, n, u, v, conic (a, b, c), opacity, tile box)``, or None
    when gsplat culls it (clip range, determinant, opacity, extent, off-image)."""
    Rv, tv = viewmat[:3, :3], viewmat[:3, 3]
    pc = Rv @ mean + tv
    z = pc[2]
    if z < near or z > far:
        return None
    Rq = _rotation(np.asarray(quat, np.float64))
    sigma_c = Rv @ (Rq @ np.diag(np.asarray(scale, np.float64) ** 2) @ Rq.T) @ Rv.T
    u, v, J = _screen_jacobian(pc, K, width, height, ortho)
    S2 = J @ sigma_c @ J.T
    det0 = S2[0, 0] * S2[1, 1] - S2[0, 1] * S2[1, 0]
    S2 = S2 + eps2d * np.eye(2)
    det = S2[0, 0] * S2[1, 1] - S2[0, 1] * S2[1, 0]
    if det <= 0:
        return None
    if antialiased:
        op *= math.sqrt(max(0.0, det0 / det))
    if op < 1.0 / 255.0:
        return None
    ext = min(3.33, math.sqrt(2.0 * math.log(op * 255.0)))
    rx, ry = math.ceil(ext * math.sqrt(S2[0, 0])), math.ceil(ext * math.sqrt(S2[1, 1]))
    if rx <= 0 or ry <= 0:
        return None
    if u + rx <= 0 or u - rx >= width or v + ry <= 0 or v - ry >= height:
        return None
    inv = np.linalg.inv(S2)
    return (z, n, u, v, (inv[0, 0], inv[0, 1], inv[1, 1]), op, _tile_box(u, v, rx, ry, width, height))


def _composite(
    splats: list[tuple], feats: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front-to-back compositing of depth-sorted splats at every pixel centre, gsplat's rules
    (alpha capped at 0.999, skipped below 1/255, a pixel stops before T would fall to 1e-4).
    Returns (weighted features [H, W, D], transmittance T [H, W], weighted depth [H, W])."""
    py, px = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    tile_x, tile_y = (px // 16).astype(int), (py // 16).astype(int)
    T = np.ones((height, width))
    done = np.zeros((height, width), bool)
    acc = np.zeros((height, width, feats.shape[1]))
    acc_z = np.zeros((height, width))
    for z, n, u, v, (a, b, c), op, (x0, x1, y0, y1) in splats:
        in_box = (tile_x >= x0) & (tile_x < x1) & (tile_y >= y0) & (tile_y < y1)
        dx, dy = u - px, v - py
        power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = np.minimum(0.999, op * np.exp(-power))
        use = in_box & ~done & (power >= 0) & (alpha >= 1.0 / 255.0)
        next_T = T * (1.0 - alpha)
        stop = use & (next_T <= 1e-4)
        done |= stop
        use &= ~stop
        wgt = np.where(use, alpha * T, 0.0)
        acc += wgt[..., None] * feats[n]
        acc_z += wgt * z
        T = np.where(use, next_T, T)
    return acc, T, acc_z
