"""Random test scenes with the awkward cases (test helper)."""

from __future__ import annotations

import numpy as np


def random_scene(
    rng: np.random.Generator, n: int, channels: int, depth: float = 3.0
) -> dict[str, np.ndarray]:
    """n ordinary Gaussians in front of an identity camera plus a fixed set of special ones.

    Specials: behind the camera, straddling / just inside / just outside the near plane, huge
    (bigger than the view), tiny (below a pixel), negative and over-unit opacity, far off-screen,
    and a stack of opaque Gaussians that saturates some pixels (transmittance stop).
    """
    means = np.c_[rng.uniform(-1.0, 1.0, (n, 2)), rng.uniform(depth - 1.0, depth + 1.0, n)]
    scales = np.exp(rng.uniform(np.log(0.01), np.log(0.3), (n, 3)))
    opac = rng.uniform(0.05, 1.0, n)
    special = [
        # (mean, scales, opacity)
        ((0.1, 0.0, -1.0), (0.3, 0.3, 0.3), 0.9),  # behind the camera
        ((0.0, 0.1, 0.02), (0.5, 0.4, 0.6), 0.3),  # straddles the near plane (centre just inside)
        ((0.05, -0.1, 0.009), (0.2, 0.2, 0.2), 0.9),  # centre just outside the near plane
        ((0.0, 0.0, 6.0), (4.0, 3.0, 0.5), 0.3),  # huge: covers the whole view
        ((0.2, 0.1, 2.0), (1e-5, 1e-5, 1e-5), 0.95),  # tiny: only the 0.3 px² low-pass remains
        ((-0.3, 0.2, 2.5), (1e-4, 2e-4, 1e-4), 0.7),  # tiny
        ((0.3, -0.2, 2.5), (0.2, 0.2, 0.2), -0.6),  # negative opacity: contributes nothing
        ((-0.2, -0.3, 2.2), (0.1, 0.05, 0.1), 1.4),  # over-unit opacity (3.33 sigma cap, 0.999 clamp)
        ((8.0, 0.0, 2.0), (0.3, 0.3, 0.3), 0.9),  # far off-screen (Jacobian clamp, culled)
        ((1.2, 0.9, 2.0), (0.4, 0.1, 0.2), 0.8),  # partly off-screen
    ]
    sm = np.array([s[0] for s in special], float)
    ss = np.array([s[1] for s in special], float)
    so = np.array([s[2] for s in special], float)
    # an opaque stack in front of the centre -> transmittance falls below 1e-4 there
    k = 12
    stack_m = np.c_[rng.normal(0.0, 0.02, (k, 2)), np.linspace(1.5, 1.8, k)]
    stack_s = np.full((k, 3), 0.15)
    stack_o = np.full(k, 0.99)
    means = np.r_[means, sm, stack_m]
    scales = np.r_[scales, ss, stack_s]
    opac = np.r_[opac, so, stack_o]
    N = means.shape[0]
    return {
        "means": means,
        "quats": rng.normal(size=(N, 4)),
        "scales": scales,
        "opacities": opac,
        "features": rng.uniform(-1.0, 2.0, (N, channels)),
    }


def pinhole_K(width: int, height: int, f: float) -> np.ndarray:
    return np.array([[f, 0.0, width / 2 + 0.3], [0.0, f * 1.1, height / 2 - 0.2], [0.0, 0.0, 1.0]])


def look_at_viewmat(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera for a camera at ``eye`` looking at ``target`` (world -Y up)."""
    f = target - eye
    f = f / np.linalg.norm(f)
    r = np.cross(f, np.array([0.0, -1.0, 0.0]))
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = r, d, f, eye
    return np.linalg.inv(c2w)
