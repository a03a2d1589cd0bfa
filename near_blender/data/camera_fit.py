"""Fit the camera that took a photo to the geometry prior: silhouettes, IoU, pose optimisation.

The prior is drawn as a cloud of small opaque Gaussians on its surface (points sampled on the
mesh's triangles, or the centres of its occupied voxels) with the stack's differentiable rasterizer
(:func:`near_blender.render.rasterize`, torch backend), so its alpha is a function of the camera
that autograd can follow. :func:`fit_camera` moves the camera (and, optionally, its focal length)
until that silhouette matches the photo's alpha, coarse to fine:

* pose = the start camera, orbited about the prior's centre by a rotation ``w`` (axis-angle, in
  the camera's axes) and moved by ``t`` (camera axes, in units of the start distance); focal
  length ``f0 exp(phi)`` with ``phi`` fitted only on request;
* loss = 1 - soft IoU of the rendered alpha and the photo's alpha, both area-downsampled to the
  stage's size (48, 96, then 192 pixels on the long side; coarse stages see a blurred silhouette,
  which widens the basin);
* Adam on (w, t, phi); several starts (the given camera and/or :func:`orbit_guesses`) are fitted
  at the coarse size and the best goes on.

Conventions are the stack's (:mod:`near_blender.render.camera`): OpenCV world-to-camera ``viewmat``
in Blender's Z-up world, ``K`` in pixels. Everything runs on CPU in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import NearError
from ..render.camera import Camera, look_at
from ..utils.progress import Cancelled

# (long side px, Adam steps, learning rate, points drawn): a Gaussian costs more than a pixel here
STAGES = ((48, 60, 0.03, 6000), (96, 50, 0.01, 8000), (256, 50, 0.003, 20000))
GOOD_IOU = 0.85  # below this the set-up is probably wrong (see :func:`iou_warning`)
MAX_ROLL = 30.0  # degrees: a fitted camera rolled more than this suggests a prior turned on its side
KEEP_STARTS = 3  # of many start cameras, the best this many (by IoU at the coarse size) are fitted


INSET = 2.5  # points move this many Gaussian sigmas inwards (see PriorCloud; calibrated on a Cycles render)


@dataclass(frozen=True)
class PriorCloud:
    """The prior as points on its surface: ``points [P, 3]`` (world, metres), ``spacing`` (metres,
    the typical distance between neighbouring points) and, for a mesh, outward unit ``normals
    [P, 3]``.

    Many overlapping opaque Gaussians reach alpha 0.5 about two sigmas outside the outermost
    centres, so a cloud's silhouette is wider than the surface's; with normals, each point is drawn
    ``INSET`` sigmas inside the surface, which puts the rim back where the mesh's is."""

    points: np.ndarray
    spacing: float
    normals: np.ndarray | None = None

    @property
    def centre(self) -> np.ndarray:
        return 0.5 * (self.points.min(0) + self.points.max(0))

    @property
    def size(self) -> float:
        return float((self.points.max(0) - self.points.min(0)).max())

    def subset(self, count: int) -> PriorCloud:
        """The first ``count`` points (a uniform subsample: the points are in random order), with
        the spacing that many points have."""
        if count >= len(self.points):
            return self
        normals = None if self.normals is None else self.normals[:count]
        return PriorCloud(self.points[:count], self.spacing * math.sqrt(len(self.points) / count), normals)


def cloud_from_triangles(triangles: np.ndarray, count: int = 30000, seed: int = 0) -> PriorCloud:
    """Area-weighted uniform samples of ``triangles [F, 3, 3]`` (world space)."""
    tris = np.asarray(triangles, np.float64).reshape(-1, 3, 3)
    if len(tris) == 0:
        raise NearError("The geometry prior has no faces; the camera is fitted to a surface mesh.")
    area = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    total = float(area.sum())
    if total <= 0:
        raise NearError("The geometry prior's faces have no area; the camera cannot be fitted to it.")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tris), size=count, p=area / total)
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tris[pick]
    pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    centre = 0.5 * (pts.min(0) + pts.max(0))
    if float(np.einsum("ij,ij->i", n, pts - centre).mean()) < 0:  # a mesh wound inside out
        n = -n
    return PriorCloud(pts.astype(np.float32), math.sqrt(total / count), n.astype(np.float32))


def cloud_from_voxels(
    coords: np.ndarray, matrix_world: np.ndarray | None, resolution: int = 64
) -> PriorCloud:
    """The centres of occupied voxels ``coords [N, 3]`` of the canonical grid, placed by
    ``matrix_world`` (canonical box -> world; None: the canonical frame), with the outward normals
    stage 1 computes for them (:func:`near_blender.data.delighting.prior_geometry`)."""
    from .delighting import prior_geometry

    c = (np.asarray(coords, np.float64) + 0.5) / resolution - 0.5
    M = np.eye(4) if matrix_world is None else np.asarray(matrix_world, np.float64)
    pts = c @ M[:3, :3].T + M[:3, 3]
    n = prior_geometry(np.asarray(coords), resolution).normals @ np.linalg.inv(M[:3, :3])  # inverse transpose
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    order = np.random.default_rng(0).permutation(len(pts))  # random order: subsets are uniform
    spacing = float(np.cbrt(abs(np.linalg.det(M[:3, :3])))) / resolution
    return PriorCloud(pts[order].astype(np.float32), spacing, n[order].astype(np.float32))


def _scaled(camera: Camera, long_side: int) -> Camera:
    s = long_side / max(camera.width, camera.height)
    w, h = max(1, round(camera.width * s)), max(1, round(camera.height * s))
    return camera.resized(w, h)


def _render_alpha(cloud: PriorCloud, pts: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                  height: int, distance: float) -> torch.Tensor:  # fmt: skip
    """Alpha ``[H, W]`` of the cloud: each point a round Gaussian at least ~1 pixel wide."""
    from ..render import rasterize

    pixel = distance / float(K[0, 0])  # metres per pixel at the prior's distance
    sigma = max(0.6 * cloud.spacing, 0.5 * pixel)
    if cloud.normals is not None:
        pts = pts - (INSET * sigma) * torch.as_tensor(cloud.normals)
    n = len(pts)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    _, alpha, _ = rasterize(
        pts, quats, torch.full((n, 3), sigma), torch.full((n,), 0.99), torch.zeros(n, 1),
        viewmat[None], K[None], width, height, backend="torch",
    )  # fmt: skip
    return alpha[0, ..., 0]


def _mask_at(mask: np.ndarray, width: int, height: int) -> torch.Tensor:
    """The photo's alpha ``[H0, W0]`` area-averaged to ``height x width``."""
    m = torch.as_tensor(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(m, size=(height, width), mode="area")[0, 0]


def _soft_iou(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    inter = (a * m).sum()
    return inter / (a.sum() + m.sum() - inter).clamp_min(1e-6)


def _axis_angle(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of the axis-angle vector ``w [3]`` (Rodrigues; smooth at 0)."""
    theta2 = (w * w).sum()
    theta = torch.sqrt(theta2 + 1e-12)
    k = torch.zeros(3, 3, dtype=w.dtype)  # zeros for the diagonal, in w's graph-free dtype
    k = torch.stack(
        [
            torch.stack([k[0, 0], -w[2], w[1]]),
            torch.stack([w[2], k[1, 1], -w[0]]),
            torch.stack([-w[1], w[0], k[2, 2]]),
        ]
    )
    a = torch.where(theta2 > 1e-8, torch.sin(theta) / theta, 1 - theta2 / 6)
    b = torch.where(theta2 > 1e-8, (1 - torch.cos(theta)) / (theta2 + 1e-12), 0.5 - theta2 / 24)
    return torch.eye(3, dtype=w.dtype) + a * k + b * (k @ k)  # I + sin/θ [w]x + (1-cos)/θ² [w]x²


class _Pose:
    """Differentiable camera around a start camera (see the module docstring)."""

    def __init__(self, start: Camera, centre: np.ndarray, fit_focal: bool) -> None:
        self.start = start
        V0 = torch.as_tensor(start.viewmat, dtype=torch.float32)
        self.R0, self.t0 = V0[:3, :3], V0[:3, 3]
        self.c_cam = self.R0 @ torch.as_tensor(centre, dtype=torch.float32) + self.t0  # centre, camera axes
        self.distance = float(self.c_cam.norm())
        self.w = torch.zeros(3, requires_grad=True)
        self.t = torch.zeros(3, requires_grad=True)
        self.phi = torch.zeros(1, requires_grad=fit_focal)
        self.fit_focal = fit_focal

    def params(self) -> list[torch.Tensor]:
        return [self.w, self.t] + ([self.phi] if self.fit_focal else [])

    def matrices(self, cam: Camera) -> tuple[torch.Tensor, torch.Tensor]:
        """(viewmat [4, 4], K [3, 3]) for the (possibly resized) start camera ``cam``."""
        Rw = _axis_angle(self.w)
        # x_cam = Rw (R0 x + t0 - c) + c + d t: orbit about the centre c, then move
        R = Rw @ self.R0
        t = Rw @ (self.t0 - self.c_cam) + self.c_cam + self.distance * self.t
        V = torch.cat([torch.cat([R, t[:, None]], 1), torch.tensor([[0.0, 0.0, 0.0, 1.0]])], 0)
        s, one = torch.exp(self.phi[0]), torch.ones(())
        focal = torch.stack(
            [torch.stack([s, s, one]), torch.stack([s, s, one]), torch.stack([one, one, one])]
        )
        return V, torch.as_tensor(cam.K, dtype=torch.float32) * focal  # fx, fy scaled; cx, cy kept

    def camera(self) -> Camera:
        with torch.no_grad():
            V, K = self.matrices(self.start)
        return Camera(V.double().numpy(), K.double().numpy(), self.start.width, self.start.height,
                      self.start.near, self.start.far, self.start.model, dict(self.start.meta))  # fmt: skip


def silhouette_iou(cloud: PriorCloud, camera: Camera, mask: np.ndarray, long_side: int = 192) -> float:
    """IoU of the prior's silhouette seen by ``camera`` and the photo's alpha ``mask [H, W]`` (0..1),
    both at ``long_side`` pixels on the long side, thresholded at 0.5."""
    cam = _scaled(camera, long_side)
    pose = _Pose(camera, cloud.centre, False)
    with torch.no_grad():
        V, K = pose.matrices(cam)
        a = _render_alpha(cloud, torch.as_tensor(cloud.points), V, K, cam.width, cam.height, pose.distance)
    m = _mask_at(mask, cam.width, cam.height)
    a, m = a > 0.5, m > 0.5
    union = int((a | m).sum())
    return float((a & m).sum()) / union if union else 0.0


def orbit_guesses(
    cloud: PriorCloud, like: Camera, yaws: int = 8, pitches: tuple[float, ...] = (15.0, 40.0)
) -> list[Camera]:
    """Cameras on rings around the prior (Z up), looking at its centre, with ``like``'s image size
    and intrinsics, at the distance where the prior spans ~60% of the image's short side."""
    f = float(min(like.K[0, 0], like.K[1, 1]))
    short = min(like.width, like.height)
    d = f * cloud.size / (0.6 * short) + 0.5 * cloud.size
    out = []
    for pitch in pitches:
        for i in range(yaws):
            yaw = 2 * math.pi * i / yaws
            p = math.radians(pitch)
            eye = cloud.centre + d * np.array(
                [math.cos(p) * math.cos(yaw), math.cos(p) * math.sin(yaw), math.sin(p)]
            )
            out.append(
                Camera(look_at(eye, cloud.centre), like.K, like.width, like.height, like.near, like.far)
            )
    return out


@dataclass(frozen=True)
class CameraFit:
    """Result of :func:`fit_camera`: the fitted ``camera``, its silhouette IoU against the photo,
    the start camera's IoU (the best start's), and the seconds it took."""

    camera: Camera
    iou: float
    start_iou: float
    seconds: float


def fit_camera(
    cloud: PriorCloud,
    mask: np.ndarray,
    starts: list[Camera],
    fit_focal: bool = False,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> CameraFit:
    """Fit a camera so that the prior's silhouette matches ``mask [H, W]`` (the photo's alpha, 0..1).

    ``starts``: one or more start cameras, all of the photo's aspect ratio (each is fitted at the
    coarse size; the best continues). ``cancel`` returning True raises :class:`Cancelled`. Raises
    NearError when the photo has no object or a start camera's aspect differs from the photo's.
    """
    import time

    t0 = time.perf_counter()
    mask = np.asarray(mask, np.float32)
    if mask.ndim != 2 or float((mask > 0.5).mean()) < 1e-4:
        raise NearError("The photo's alpha is empty: there is no object to fit the camera to.")
    if not starts:
        raise NearError("fit_camera needs at least one start camera.")
    H, W = mask.shape
    for s in starts:
        if abs((s.width / s.height) / (W / H) - 1) > 0.01:
            raise NearError(
                f"The camera renders {s.width}x{s.height} but the photo is {W}x{H}: give the camera the "
                "photo's aspect ratio first."
            )
    if len(starts) > KEEP_STARTS:  # rank by the coarse silhouette, fit the best few
        coarse = cloud.subset(STAGES[0][3])
        ranked = sorted(starts, key=lambda s: -silhouette_iou(coarse, s, mask, STAGES[0][0]))
        starts = ranked[:KEEP_STARTS]
    start_ious = [silhouette_iou(cloud, s, mask) for s in starts]
    total = sum(stage[1] for stage in STAGES) + (len(starts) - 1) * STAGES[0][1]
    done = 0

    def run(pose: _Pose, stage: tuple[int, int, float, int]) -> float:
        nonlocal done
        side, steps, lr, count = stage
        cam = _scaled(pose.start, side)
        m = _mask_at(mask, cam.width, cam.height)
        sub = cloud.subset(count)
        pts = torch.as_tensor(sub.points)
        opt = torch.optim.Adam(pose.params(), lr=lr)
        loss = torch.ones(())
        for _ in range(steps):
            if cancel is not None and cancel():
                raise Cancelled("Camera fitting was cancelled.")
            V, K = pose.matrices(cam)
            loss = 1 - _soft_iou(_render_alpha(sub, pts, V, K, cam.width, cam.height, pose.distance), m)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if progress is not None:
                progress(done / total, f"fitting the camera ({side} px): IoU {1 - float(loss.detach()):.3f}")
        return float(loss.detach())

    poses = [_Pose(s, cloud.centre, fit_focal) for s in starts]
    losses = [run(p, STAGES[0]) for p in poses]
    best = poses[int(np.argmin(losses))]
    for stage in STAGES[1:]:
        run(best, stage)
    fitted = best.camera()
    return CameraFit(fitted, silhouette_iou(cloud, fitted, mask), max(start_ious), time.perf_counter() - t0)


def orbited(camera: Camera, centre: np.ndarray, rotvec: np.ndarray, distance_scale: float = 1.0) -> Camera:
    """``camera`` orbited about ``centre`` by the axis-angle ``rotvec`` (world axes, radians), its
    distance to ``centre`` scaled by ``distance_scale``; the intrinsics are kept."""
    R = _axis_angle(torch.as_tensor(np.asarray(rotvec, np.float64))).numpy()
    c2w = np.linalg.inv(camera.viewmat)
    c = np.asarray(centre, np.float64)
    c2w[:3, :3] = R @ c2w[:3, :3]
    c2w[:3, 3] = c + distance_scale * (R @ (c2w[:3, 3] - c))
    return Camera(
        np.linalg.inv(c2w), camera.K, camera.width, camera.height, camera.near, camera.far, camera.model
    )


def camera_error(fitted: Camera, true: Camera, centre: np.ndarray) -> tuple[float, float]:
    """(rotation error in degrees, relative error of the distance to ``centre``) between cameras."""
    R = fitted.viewmat[:3, :3] @ true.viewmat[:3, :3].T
    angle = math.degrees(math.acos(float(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))
    d_fit = np.linalg.norm(fitted.position - centre)
    d_true = np.linalg.norm(true.position - centre)
    return angle, float(d_fit / d_true - 1.0)


def roll_deg(camera: Camera) -> float:
    """The camera's roll: the angle (degrees) between its image's up direction and world +Z seen
    in the image plane; 0 for an upright photo (nan when it looks straight up or down)."""
    c2w = camera.c2w[:3, :3]
    forward, up = c2w[:, 2], -c2w[:, 1]  # OpenCV: z forward, y down
    z = np.array([0.0, 0.0, 1.0]) - forward * forward[2]  # world up, in the image plane
    if np.linalg.norm(z) < 1e-3:
        return float("nan")
    z /= np.linalg.norm(z)
    return math.degrees(math.atan2(float(np.dot(np.cross(up, z), forward)), float(np.dot(up, z))))


def iou_warning(iou: float, where: str) -> str | None:
    """A warning in the user's words when the silhouette IoU is low (None when it is fine).

    ``where``: how the user fits the camera in this interface (a menu path or a command)."""
    if iou >= GOOD_IOU:
        return None
    return (
        f"The geometry prior, seen through the camera, covers the photo's object poorly (silhouette IoU "
        f"{iou:.2f}, want >= {GOOD_IOU}). Likely causes: the camera does not frame the object as the photo "
        f"does, the prior's up axis is wrong (Y-up vs Z-up), or the camera's aspect ratio differs from the "
        f"photo's. Fix the camera with {where}."
    )
