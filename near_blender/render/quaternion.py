"""Quaternion maths (torch): ``(w, x, y, z)`` order, Hamilton product, active rotations.

The Gaussians' orientations (:mod:`near_blender.models.gaussian_head`) and the rasterizer's
covariances (:mod:`near_blender.render._projection`) share these.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quat_to_rotmat(q: Tensor, normalize: bool = False) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``[..., 4]`` (w, x, y, z).

    Column ``j`` is the rotated axis ``j``. ``normalize=False`` expects unit quaternions and uses
    them as they are (a non-unit ``q`` gives a scaled, non-orthogonal matrix; the Gaussian head's
    decoded rotations are unit already); ``normalize=True`` divides by the length first, so any
    non-zero length gives the rotation (the rasterizer's raw inputs).
    """
    if normalize:
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of quaternions ``[..., 4]`` (w, x, y, z)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotation_matrix_to_quat(R: Tensor) -> Tensor:
    """Unit quaternion (w, x, y, z) ``[4]`` of a proper rotation matrix ``[3, 3]``."""
    m = R.double()
    tr = float(m[0, 0] + m[1, 1] + m[2, 2])
    if tr > 0:
        s = (tr + 1.0) ** 0.5 * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = float(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) ** 0.5 * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = float(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) ** 0.5 * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = float(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) ** 0.5 * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qt = torch.tensor([float(v) for v in q], dtype=R.dtype, device=R.device)
    return qt / qt.norm()
