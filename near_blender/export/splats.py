"""The relit Gaussians of one NeAR asset as a plain splat cloud: numpy arrays in Blender's world
frame (Z up, metres), in the conventions of 3D Gaussian Splatting (3DGS) files.

:func:`asset_splats` is the one function behind every Gaussian export: it takes the Gaussians that
F12 rasterizes (:meth:`near_blender.scene.SceneRenderer.gaussians`: the asset decoded for one view
under one lighting, placed by its ``matrix_world``) and draws them as that view's camera would
(:meth:`~near_blender.models.relightable.RelightableDecoder.drawn`: the opacity cut and the
per-camera scale floor), so that rasterizing the cloud from the export view reproduces the NeAR
light pass.

Colour: ``colour(d) = 0.5 + sum_k sh[:, k] Y_k(d)`` (3DGS's real spherical harmonics, ``Y_0 = C0 =
0.28209479177387814``, ``d = normalize(mean - camera centre)``; the camera's forward axis for an
orthographic camera), clamped at 0 as 3DGS viewers do. ``color_space`` says what that colour is:
``"linear"`` -- the NeAR radiance itself, scene-linear Rec.709 HDR (values above 1 kept) -- or
``"agx"`` -- that radiance through Blender's AgX view per Gaussian (display sRGB in [0, 1], for
viewers that expect the display colours of 3DGS captures; no longer additive, so not a round trip).

View dependence: NeAR decodes the asset anew for every view. Degree 0 keeps the export view's
colours. Degree 1-3 fits the higher coefficients per Gaussian, by ridge least squares, to the
colours of the same Gaussians decoded from ``2 (degree + 1)^2 - 1`` more views on a sphere around the
asset (Fibonacci directions, at the export camera's distance), constrained to reproduce the export
view exactly; the geometry (means, scales, rotations, opacities) is always the export view's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import NearError
from ..models.gaussian_head import SH_C0
from ..render.camera import Camera, intrinsics_from_fov, look_at
from ..utils.progress import CancelCheck, Progress, as_reporter

COLOR_SPACES = ("linear", "agx")
MAX_SH_DEGREE = 3
RIDGE = 1e-2  # per fitting view: weight of |higher SH coefficients|^2 in the fit
# 3DGS's real SH constants (sh_utils.py), degrees 1-3
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)  # fmt: skip


@dataclass(frozen=True)
class SplatCloud:
    """M Gaussians in Blender's world frame (float32 arrays).

    means [M, 3] metres; normals [M, 3] (unit; the NeAR normal of the export view); quats [M, 4]
    (w, x, y, z; unit); scales [M, 3] standard deviations in metres (as the light pass draws them
    through the export camera); opacities [M] in [1/255, 1); sh [M, (degree + 1)^2, 3] SH
    coefficients of the colour (module docstring; ``sh[:, 0]`` is 3DGS's ``f_dc``); base_color
    [M, 3], roughness [M], metallic [M]: the PBR attributes (linear, [0, 1]); color_space
    "linear" or "agx"."""

    means: np.ndarray
    normals: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    sh: np.ndarray
    base_color: np.ndarray
    roughness: np.ndarray
    metallic: np.ndarray
    color_space: str = "linear"

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def degree(self) -> int:
        return round(math.sqrt(self.sh.shape[1])) - 1

    def colors(self, camera: Camera) -> np.ndarray:
        """``[M, 3]`` float32: every Gaussian's colour seen by ``camera`` (clamped at 0)."""
        basis = sh_basis(view_directions(self.means, camera), self.degree)
        return np.maximum(0.5 + np.einsum("mk,mkc->mc", basis, self.sh.astype(np.float64)), 0.0).astype(
            np.float32
        )


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """3DGS's real SH basis ``[..., (degree + 1)^2]`` (float64) at unit directions ``dirs [..., 3]``."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise NearError(f"SH degree must be 0..{MAX_SH_DEGREE}, got {degree}.")
    d = np.asarray(dirs, dtype=np.float64)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    out = [np.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]  # fmt: skip
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]  # fmt: skip
    return np.stack(out, axis=-1)


def view_directions(means: np.ndarray, camera: Camera) -> np.ndarray:
    """``[M, 3]`` unit directions from the camera to each mean (its forward axis when orthographic)."""
    if camera.model == "ortho":
        return np.broadcast_to(camera.forward, np.shape(means)).astype(np.float64)
    d = np.asarray(means, dtype=np.float64) - camera.position
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)


def fit_sh(colors: np.ndarray, dirs: np.ndarray, degree: int, ridge: float = RIDGE) -> np.ndarray:
    """SH coefficients ``[M, (degree + 1)^2, 3]`` from colours ``[V, M, 3]`` seen along ``dirs
    [V, M, 3]``; view 0 (the export view) is reproduced exactly, the others in the least-squares
    sense with ``ridge * (V - 1) * |higher coefficients|^2`` added (see the module docstring)."""
    c = np.asarray(colors, dtype=np.float64)
    basis = sh_basis(dirs, degree)  # [V, M, n]
    M, n = c.shape[1], basis.shape[-1]
    sh = np.zeros((M, n, 3))
    if degree > 0 and c.shape[0] > 1:
        D = basis[1:, :, 1:] - basis[:1, :, 1:]  # [V-1, M, n-1]: the change of the higher terms from view 0
        y = c[1:] - c[:1]  # [V-1, M, 3]
        A = np.einsum("vmi,vmj->mij", D, D) + ridge * (c.shape[0] - 1) * np.eye(n - 1)
        sh[:, 1:] = np.linalg.solve(A, np.einsum("vmi,vmc->mic", D, y))
    higher = np.einsum("mi,mic->mc", basis[0, :, 1:], sh[:, 1:])
    sh[:, 0] = (c[0] - 0.5 - higher) / SH_C0
    return sh.astype(np.float32)


def fit_cameras(centre: np.ndarray, camera: Camera, count: int, radius: float) -> list[Camera]:
    """``count`` cameras on a sphere around ``centre`` (Fibonacci directions), at the export
    camera's distance (``radius`` for an orthographic one), each looking at ``centre``."""
    from ..data.delighting import fibonacci_directions

    dist = radius if camera.model == "ortho" else float(np.linalg.norm(camera.position - centre))
    K = intrinsics_from_fov(40.0, 64, 64)
    return [
        Camera(look_at(centre + max(dist, 1e-3) * d, centre), K, 64, 64) for d in fibonacci_directions(count)
    ]


def default_camera(matrix_world: np.ndarray, size: int = 512, fov_deg: float = 40.0) -> Camera:
    """A view of the asset when none is given: from the front (-Y) and 20 degrees above, framing
    the canonical box's bounding sphere (pinhole, ``size``², ``fov_deg``)."""
    from ..scene import similarity

    _, s, t, _ = similarity(matrix_world)
    radius = s * math.sqrt(3.0) / 2.0
    dist = radius / math.sin(math.radians(fov_deg) / 2.0) * 1.1
    el = math.radians(20.0)
    eye = t + dist * np.array([0.0, -math.cos(el), math.sin(el)])
    K = intrinsics_from_fov(fov_deg, size, size)
    return Camera(look_at(eye, t), K, size, size, near=0.01 * dist, far=10.0 * dist)


def drawn_gaussians(
    renderer: Any,
    asset: Any,
    camera: Camera,
    env: Any,
    precision: str = "fp32",
    progress: Progress | None = None,
) -> tuple[Any, np.ndarray]:
    """``(drawn, keep)``: the Gaussians of ``asset`` (a :class:`~near_blender.scene.PlacedAsset`)
    under ``env`` seen from ``camera``, as that camera draws them
    (:class:`~near_blender.models.gaussian_head.RelightableGaussians` in the world, float32: opacity
    cut and scale floors applied), and ``keep [M]``, which of the decoded Gaussians those are."""
    import torch

    from ..models.relightable import MIN_OPACITY

    if len(asset.coords) == 0:
        raise NearError("The LH-SLAT has no voxels (an empty asset); nothing to export.")
    g = renderer.gaussians([asset], camera.viewmat, env, precision, progress)
    keep = (g.opacities >= MIN_OPACITY).cpu().numpy()

    def tensor(a: np.ndarray) -> Any:
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=renderer.pipe.device)

    drawn = renderer.model.drawn(g, tensor(camera.viewmat), tensor(camera.K), camera.model)
    if len(drawn) == 0:
        raise NearError("The asset has no visible Gaussians from this view; nothing to export.")
    return drawn, keep


def as_numpy(t: Any) -> np.ndarray:
    """A tensor as a float32 numpy array (on the CPU)."""
    return t.detach().float().cpu().numpy().astype(np.float32)


def asset_splats(
    renderer: Any,
    asset: Any,
    camera: Camera,
    env: Any,
    sh_degree: int = 0,
    color_space: str = "linear",
    precision: str = "fp32",
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> SplatCloud:
    """The Gaussians of ``asset`` (a :class:`~near_blender.scene.PlacedAsset`) under ``env`` (an
    :class:`~near_blender.render.envmap.Environment`) seen from ``camera``, with a
    :class:`~near_blender.scene.SceneRenderer` ``renderer``. See the module docstring."""
    if not 0 <= int(sh_degree) <= MAX_SH_DEGREE:
        raise NearError(f"SH degree must be 0..{MAX_SH_DEGREE}, got {sh_degree}.")
    if color_space not in COLOR_SPACES:
        raise NearError(f"Unknown colour space {color_space!r}; use one of {list(COLOR_SPACES)}.")
    rep = as_reporter(progress, cancel)
    n_fit = 2 * (sh_degree + 1) ** 2 - 1 if sh_degree > 0 else 0
    steps = n_fit + 2
    rep.update(0.0, "decoding the Gaussians")
    d, keep = drawn_gaussians(renderer, asset, camera, env, precision, rep.sub(0.0, 1.0 / steps))
    n = as_numpy
    cloud = SplatCloud(
        means=n(d.means), normals=n(d.normals), quats=n(d.quats), scales=n(d.light_scales),
        opacities=n(d.opacities), sh=np.zeros((len(d), 1, 3), np.float32), base_color=n(d.base_color),
        roughness=n(d.roughness), metallic=n(d.metallic), color_space=color_space,
    )  # fmt: skip
    colors, dirs = [_colors(n(d.radiance), color_space)], [view_directions(cloud.means, camera)]
    if n_fit:
        centre = cloud.means.mean(axis=0).astype(np.float64)
        radius = 3.0 * float(np.linalg.norm(cloud.means - centre, axis=-1).max())
        for i, cam in enumerate(fit_cameras(centre, camera, n_fit, radius)):
            rep.update((i + 1) / steps, f"view {i + 1}/{n_fit} for the SH fit")
            gv = renderer.gaussians([asset], cam.viewmat, env, precision)
            colors.append(_colors(n(gv.radiance)[keep], color_space))
            dirs.append(view_directions(cloud.means, cam))
    rep.update((steps - 1) / steps, "fitting the colours")
    cloud = replace(cloud, sh=fit_sh(np.stack(colors), np.stack(dirs), sh_degree))
    rep.update(1.0, "done")
    return cloud


def _colors(radiance: np.ndarray, color_space: str) -> np.ndarray:
    if color_space == "linear":
        return radiance
    from ..render.tonemap import agx

    return np.asarray(agx(np.maximum(radiance, 0.0)), np.float32)


def render_splats(
    cloud: SplatCloud,
    camera: Camera,
    mode: str = "classic",
    backend: str = "auto",
    eps2d: float | None = None,
) -> dict[str, np.ndarray]:
    """Rasterize the cloud as a 3DGS viewer would (colours from the SH at each Gaussian's direction
    from ``camera``, clamped at 0): ``{"rgb": [H, W, 3] premultiplied, "alpha": [H, W, 1]}``, float32.
    Culled to the camera's clip range as F12 is. ``eps2d``: the viewer's pixel filter (px²; default
    0.3, what 3DGS viewers add). A model with a smaller ``pixel_filter`` (the bundled one: 0.1) looks
    that much softer in such a viewer; its own value reproduces the NeAR render exactly."""
    import torch

    from ..render.rasterize import DEFAULT_EPS2D, rasterize

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    rgb, alpha, _ = rasterize(
        t(cloud.means), t(cloud.quats), t(cloud.scales), t(cloud.opacities), t(cloud.colors(camera)),
        t(camera.viewmat[None]), t(camera.K[None]), camera.width, camera.height, near_plane=camera.near,
        far_plane=camera.far, mode=mode, camera_model=camera.model, backend=backend,
        eps2d=DEFAULT_EPS2D if eps2d is None else eps2d,
    )  # fmt: skip
    return {"rgb": rgb[0].numpy(), "alpha": alpha[0].numpy()}


__all__ = [
    "COLOR_SPACES",
    "MAX_SH_DEGREE",
    "SplatCloud",
    "as_numpy",
    "asset_splats",
    "drawn_gaussians",
    "default_camera",
    "fit_sh",
    "render_splats",
    "sh_basis",
    "view_directions",
]
