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

from .quaternion import quat_to_rotmat

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


def _take(x: Tensor, idx: Tensor | None) -> Tensor:
    return x if idx is None else x.index_select(0, idx)


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
    Instances come out camera-major, Gaussian index ascending (gsplat's order).
    """
    parts = [
        _project_one(
            c,
            means,
            quats,
            scales,
            opacities,
            viewmats[c],
            Ks[c],
            width,
            height,
            near_plane,
            far_plane,
            eps2d,
            antialiased,
            ortho,
        )  # fmt: skip
        for c in range(viewmats.shape[0])
    ]
    if len(parts) == 1:
        return parts[0]
    return Projected(*(torch.cat([getattr(p, f) for p in parts]) for f in Projected.__dataclass_fields__))


def _project_one(
    c: int,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    antialiased: bool,
    ortho: bool,
) -> Projected:
    """Projection into one camera (everything elementwise over the Gaussians in its clip range)."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    idx = _in_clip_range(means, R, t, near_plane, far_plane)
    mean_c = _take(means, idx) @ R.T + t  # [M, 3]
    RS = quat_to_rotmat(_take(quats, idx), normalize=True) * _take(scales, idx)[:, None, :]  # [M, 3, 3]
    M = RS.shape[0]
    # B = R_cam @ RS: row i of B for all Gaussians, [3, M, 3]; camera covariance is B B^T
    B = (R @ RS.permute(1, 0, 2).reshape(3, M * 3)).reshape(3, M, 3)
    x, y, z = mean_c.unbind(-1)
    u, v, row0, row1 = _project_centres_and_jacobian(x, y, z, B, K, width, height, ortho)
    c00 = (row0 * row0).sum(-1)
    c01 = (row0 * row1).sum(-1)
    c11 = (row1 * row1).sum(-1)
    det_orig = c00 * c11 - c01 * c01
    b00, b11 = c00 + eps2d, c11 + eps2d
    det = b00 * b11 - c01 * c01

    op = _take(opacities, idx)
    if antialiased:
        # clamp to a tiny positive value so that sqrt' stays finite for degenerate Gaussians
        # (their opacity becomes ~0 and they are culled below).
        tiny = torch.finfo(det.dtype).tiny
        op = op * torch.sqrt(torch.clamp(det_orig / torch.where(det > 0, det, 1.0), min=tiny))

    sel, rx, ry = _visible(u, v, b00, b11, det, op, width, height)
    gid = sel if idx is None else idx.index_select(0, sel)
    inv = 1.0 / det
    packed = torch.stack([u, v, b11 * inv, -c01 * inv, b00 * inv, op, z], -1).index_select(0, sel)
    radii = torch.stack([rx, ry], -1).index_select(0, sel).to(torch.int64)
    cam = torch.full_like(gid, c)
    return Projected(cam, gid, packed[:, :2], packed[:, 2:5], packed[:, 5], packed[:, 6], radii)


@torch.no_grad()
def _in_clip_range(means: Tensor, R: Tensor, t: Tensor, near_plane: float, far_plane: float) -> Tensor | None:
    """Indices ``[M]`` of the Gaussians whose camera depth lies in ``[near_plane, far_plane]`` (None:
    all of them). Tested first and without autograd, so nothing behind the camera enters the graph."""
    z_all = means @ R[2] + t[2]
    keep = (z_all >= near_plane) & (z_all <= far_plane)
    return None if bool(keep.all()) else keep.nonzero().squeeze(1)


def _project_centres_and_jacobian(
    x: Tensor, y: Tensor, z: Tensor, B: Tensor, K: Tensor, width: int, height: int, ortho: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel centres ``u, v`` ``[M]`` of camera-space means ``x, y, z`` ``[M]`` and the two rows
    ``[M, 3]`` of ``J B`` (J the projection's 2x3 Jacobian, B ``[3, M, 3]`` the rows of
    ``R_cam R S``), so that the 2D covariance is ``(J B)(J B)^T``. Pinhole: gsplat's clamp of x/z
    and y/z to 1.3x the field of view inside the Jacobian; ortho: a constant Jacobian."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if ortho:
        return fx * x + cx, fy * y + cy, fx * B[0], fy * B[1]
    rz = 1.0 / z
    u = fx * x * rz + cx
    v = fy * y * rz + cy
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_xp = (width - cx) / fx + 0.3 * tan_fovx
    lim_xn = cx / fx + 0.3 * tan_fovx
    lim_yp = (height - cy) / fy + 0.3 * tan_fovy
    lim_yn = cy / fy + 0.3 * tan_fovy
    tx = z * torch.clamp(x * rz, -lim_xn, lim_xp)
    ty = z * torch.clamp(y * rz, -lim_yn, lim_yp)
    rz2 = rz * rz
    # Jacobian rows (fx/z, 0, -fx tx/z²) and (0, fy/z, -fy ty/z²) applied to B
    row0 = (fx * rz)[:, None] * B[0] - (fx * tx * rz2)[:, None] * B[2]
    row1 = (fy * rz)[:, None] * B[1] - (fy * ty * rz2)[:, None] * B[2]
    return u, v, row0, row1


@torch.no_grad()
def _visible(
    u: Tensor, v: Tensor, b00: Tensor, b11: Tensor, det: Tensor, op: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor]:
    """gsplat's culling of projected instances: ``(kept indices [M'], extent x [M], extent y [M])``.

    ``b00, b11`` the blurred 2D covariance's diagonal, ``det`` its determinant, ``op`` the
    (compensated) opacity. Dropped: ``det <= 0``, opacity < 1/255, a zero extent, an extent box
    that misses the image, a non-finite centre. Extents in pixels, not yet rounded to int.
    """
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
    return ok.nonzero().squeeze(1), rx, ry
