"""EWA projection of 3D Gaussians into cameras, with gsplat's exact culling rules (private).

Reproduces ``gsplat``'s fused CUDA projection (``projection_ewa_3dgs_fused_fwd_kernel``, v1.5):

* covariance ``R S S^T R^T`` from a (normalized) w,x,y,z quaternion and scales;
* a Gaussian is dropped when its camera depth is outside ``[near_plane, far_plane]``;
* pinhole: ``u = fx x / z + cx`` with the Jacobian's x/z and y/z clamped to 1.3x the field of view;
  ortho: ``u = fx x + cx`` with a constant Jacobian;
* ``eps2d`` (0.3 px²) is added to the 2D covariance; in ``antialiased`` mode the opacity is scaled
  by ``sqrt(det(cov) / det(cov + eps2d I))``;
* dropped when the blurred determinant is <= 0 or the (compensated) opacity is < 1/255 (so
  negative opacities never contribute);
* extent per axis ``ceil(min(3.33, sqrt(2 ln(255 opacity))) * sqrt(cov_axis))`` pixels; dropped
  when either extent is 0 or the extent box misses the image.

Everything is plain differentiable torch (autograd), evaluated only on the (camera, Gaussian)
instances whose depth is inside the clip range, so no NaN/Inf from points behind the camera can
reach the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
EXTENT_SIGMAS = 3.33


@dataclass
class Projected:
    """Projected, visible (camera, Gaussian) instances; M = number of instances.

    Attributes:
        cam: [M] int64 camera index.
        gid: [M] int64 Gaussian index.
        means2d: [M, 2] pixel coordinates of the centre (pixel centres at +0.5).
        conics: [M, 3] inverse 2D covariance (a, b, c): power = 0.5 (a dx² + c dy²) + b dx dy.
        opacities: [M] opacity after antialiasing compensation (>= 1/255).
        depths: [M] camera-space z (metres along the optical axis).
        radii: [M, 2] int64 extent in pixels (x, y), both >= 1.
    """

    cam: Tensor
    gid: Tensor
    means2d: Tensor
    conics: Tensor
    opacities: Tensor
    depths: Tensor
    radii: Tensor

    @property
    def count(self) -> int:
        return int(self.cam.shape[0])


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] w,x,y,z quaternions (any non-zero length) -> [..., 3, 3] rotation matrices."""
    q = quats / torch.linalg.vector_norm(quats, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """[..., 3, 3] world covariance ``R diag(s)² R^T`` from quats [..., 4] and scales [..., 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float = 0.3,
    antialiased: bool = False,
    ortho: bool = False,
) -> Projected:
    """Project N Gaussians into C cameras and keep the instances gsplat would rasterize.

    Args:
        means [N, 3], quats [N, 4] (w,x,y,z), scales [N, 3], opacities [N]: world-space Gaussians.
        viewmats [C, 4, 4]: OpenCV world-to-camera; Ks [C, 3, 3]: intrinsics in pixels.
    """
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]

    # Which instances survive the depth test (no autograd needed for the decision).
    with torch.no_grad():
        z_all = torch.einsum("cj,nj->cn", R[:, 2], means) + t[:, 2:3]  # [C, N]
        keep = (z_all >= near_plane) & (z_all <= far_plane)
        cam, gid = keep.nonzero(as_tuple=True)

    Rc = R[cam]  # [M, 3, 3]
    mean_c = (Rc @ means[gid][..., None])[..., 0] + t[cam]  # [M, 3]
    cov_w = covariance_3d(quats[gid], scales[gid])
    cov_c = Rc @ cov_w @ Rc.transpose(-1, -2)  # [M, 3, 3]

    K = Ks[cam]
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    x, y, z = mean_c.unbind(-1)
    zeros = torch.zeros_like(z)
    if ortho:
        u = fx * x + cx
        v = fy * y + cy
        J = torch.stack([fx, zeros, zeros, zeros, fy, zeros], -1).reshape(-1, 2, 3)
    else:
        rz = 1.0 / z
        u = fx * x * rz + cx
        v = fy * y * rz + cy
        tan_fovx = 0.5 * width / fx
        tan_fovy = 0.5 * height / fy
        lim_xp = (width - cx) / fx + 0.3 * tan_fovx
        lim_xn = cx / fx + 0.3 * tan_fovx
        lim_yp = (height - cy) / fy + 0.3 * tan_fovy
        lim_yn = cy / fy + 0.3 * tan_fovy
        tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x * rz))
        ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y * rz))
        rz2 = rz * rz
        J = torch.stack([fx * rz, zeros, -fx * tx * rz2, zeros, fy * rz, -fy * ty * rz2], -1)
        J = J.reshape(-1, 2, 3)
    cov2 = J @ cov_c @ J.transpose(-1, -2)  # [M, 2, 2]
    c00, c01, c11 = cov2[:, 0, 0], 0.5 * (cov2[:, 0, 1] + cov2[:, 1, 0]), cov2[:, 1, 1]
    det_orig = c00 * c11 - c01 * c01
    b00, b11 = c00 + eps2d, c11 + eps2d
    det = b00 * b11 - c01 * c01

    op = opacities[gid]
    if antialiased:
        # clamp to a tiny positive value so that sqrt' stays finite for degenerate Gaussians
        # (their opacity becomes ~0 and they are culled below).
        tiny = torch.finfo(det.dtype).tiny
        op = op * torch.sqrt(torch.clamp(det_orig / torch.where(det > 0, det, 1.0), min=tiny))

    with torch.no_grad():
        op_d = op.detach()
        ok = (det > 0) & (op_d >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(op_d, min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = torch.clamp(extend, max=EXTENT_SIGMAS)
        rx = torch.ceil(extend * torch.sqrt(torch.clamp(b00.detach(), min=0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp(b11.detach(), min=0)))
        ok &= (rx > 0) & (ry > 0)
        ud, vd = u.detach(), v.detach()
        ok &= (ud + rx > 0) & (ud - rx < width) & (vd + ry > 0) & (vd - ry < height)
        ok &= torch.isfinite(ud) & torch.isfinite(vd)
        sel = ok.nonzero(as_tuple=True)[0]

    det_s = det[sel]
    conics = torch.stack([b11[sel] / det_s, -c01[sel] / det_s, b00[sel] / det_s], -1)
    means2d = torch.stack([u[sel], v[sel]], -1)
    radii = torch.stack([rx[sel], ry[sel]], -1).to(torch.int64)
    return Projected(cam[sel], gid[sel], means2d, conics, op[sel], z[sel], radii)
