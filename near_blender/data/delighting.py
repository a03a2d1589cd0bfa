"""Stage 1 without a flow: the LH-SLAT estimated from one image and the geometry prior ("delight").

The built-in ``colour_normal`` LH-SLAT (:mod:`near_blender.data.features`) is explicit: its normal
and visibility channels are functions of the geometry, and its colour channels are the appearance
under a uniform white world (for a diffuse surface, the base colour times its ambient occlusion).
The input image holds that colour times the unknown lighting on the voxels the camera sees. So:

1. **Geometry channels from the prior**: surface normals by PCA of the voxel shell
   (:mod:`near_blender.sparse.surface_normals`), oriented towards the cameras that see them;
   visibility = the fraction of ``VIS_VIEWS`` cameras spread over a sphere (radius 2, FOV 40, as
   the datagen's ``homog`` views) that see the voxel.
2. **Colour by delighting**: the image projected onto the voxels
   (:mod:`near_blender.data.image_projection`); the input's irradiance, up to a colourless scale, fitted
   as an order-2 spherical-harmonics function of the normal to the luminance of the seen voxels
   (iteratively reweighted least squares with Huber weights, so cast shadows and highlights do not
   bend it; ridge on the directional terms, since one view sees at most a hemisphere of normals;
   alternated with one albedo level per chromaticity group, so a coloured texture is not taken
   for shading),
   normalised to mean 1 over the seen voxels and divided out; voxels it shades below
   ``MIN_SHADE`` (unlit: the image holds no colour there) count as unseen. The overall level stays the image's
   (lighting strength and albedo cannot be told apart from one image); the calibration below maps
   it to the training data's. Voxels the camera does not see take the colour of the nearest seen
   ones across the voxel shell (breadth-first over the 26-neighbourhood, then a light smoothing).
3. **Calibration**: each output channel is a linear function of a few named per-voxel features
   (:data:`FEATURE_NAMES`), with coefficients fitted by least squares on training assets
   (:func:`fit_calibration`; stored as JSON in the pipeline's ``args.stage1.calibration``).

Everything is deterministic: the same image, camera and voxels give the same LH-SLAT. Conventions
as :mod:`near_blender.data.image_projection` (voxel ``c`` centred at ``(c + 0.5) / res - 0.5``,
object space Z up, OpenCV ``viewmat``, ``K`` in the image's pixels). bpy-free numpy (+ torch for the
normals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import NearError
from .image_projection import project_image_features
from .voxelize import NEIGHBOURS_26, VoxelIndex

VIS_VIEWS = 24  # cameras of the visibility estimate
VIS_RADIUS, VIS_FOV_DEG, VIS_IMAGE = 2.0, 40.0, 64  # as the datagen's homog views (tiny preset: 64²)
SH_RIDGE = 0.005  # ridge on the 8 directional SH terms, relative to the data's energy
HUBER_K = 1.345  # Huber threshold in robust standard deviations
MAX_RATIO = 3.0  # a delit voxel is at most this many times the median lit luminance (highlights)
MIN_SHADE = 0.25  # shading (relative to its mean over the seen voxels) below which a voxel is unlit
LUMA = np.array([0.2126, 0.7152, 0.0722])
CHROMA_CLUSTERS = 6  # at most this many materials told apart by chromaticity in the shading fit

# Per-voxel features the calibration may combine ("one" is the constant 1).
FEATURE_NAMES = (
    "albedo_r", "albedo_g", "albedo_b",
    "albedo_vis_r", "albedo_vis_g", "albedo_vis_b",
    "normal_x", "normal_y", "normal_z",
    "visibility", "seen", "one",
)  # fmt: skip


def sh9(n: np.ndarray) -> np.ndarray:
    """Real spherical harmonics of order <= 2 ``[..., 9]`` of unit vectors ``n [..., 3]``
    (order: Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy), Y2-1 (yz), Y20, Y21 (xz), Y22)."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return np.stack(
        [
            np.full_like(x, 0.282095),
            0.488603 * y, 0.488603 * z, 0.488603 * x,
            1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3 * z * z - 1),
            1.092548 * x * z, 0.546274 * (x * x - y * y),
        ],
        axis=-1,
    )  # fmt: skip


def fit_shading(luminance: np.ndarray, normals: np.ndarray, iterations: int = 8) -> np.ndarray:
    """SH coefficients ``[9]`` of a smooth shading ``S(n) = sh9(n) @ s`` fitted robustly to the
    luminance ``[M]`` of surface points with unit ``normals [M, 3]``."""
    L = np.asarray(luminance, np.float64)
    Y = sh9(np.asarray(normals, np.float64))
    if len(L) < 9:
        return np.array([float(np.mean(L)) / 0.282095 if len(L) else 1.0] + [0.0] * 8)
    reg = np.full(9, SH_RIDGE * len(L))
    reg[0] = 1e-9 * len(L)
    w = np.ones_like(L)
    s = np.zeros(9)
    for _ in range(iterations):
        A = Y.T @ (Y * w[:, None]) + np.diag(reg) * 0.282095**2
        s = np.linalg.solve(A, Y.T @ (w * L))
        r = L - Y @ s
        sigma = 1.4826 * float(np.median(np.abs(r))) + 1e-8
        a = np.abs(r) / (HUBER_K * sigma)
        w = np.where(a <= 1.0, 1.0, 1.0 / np.maximum(a, 1e-12))
    return s


def chroma_clusters(rgb: np.ndarray, k: int = CHROMA_CLUSTERS, iterations: int = 10) -> np.ndarray:
    """``[M]`` cluster labels of colours ``rgb [M, 3]`` by chromaticity (``rgb / sum``), which a
    white light's shading does not change: surfaces of one material share a label wherever they
    face. Deterministic k-means (farthest-point start); clusters closer than 0.03 merge."""
    x = np.asarray(rgb, np.float64)
    chroma = x[:, :2] / np.maximum(x.sum(1, keepdims=True), 1e-6)
    centres = [np.median(chroma, axis=0)]
    for _ in range(k - 1):
        d = np.min([np.linalg.norm(chroma - c, axis=1) for c in centres], axis=0)
        if d.max() < 0.03:
            break
        centres.append(chroma[int(np.argmax(d))])
    C = np.array(centres)
    for _ in range(iterations):
        labels = np.argmin(np.linalg.norm(chroma[:, None] - C[None], axis=2), axis=1)
        C = np.array([chroma[labels == j].mean(0) if (labels == j).any() else C[j] for j in range(len(C))])
    return np.argmin(np.linalg.norm(chroma[:, None] - C[None], axis=2), axis=1)


def fit_shading_and_albedo(rgb: np.ndarray, normals: np.ndarray, rounds: int = 4) -> np.ndarray:
    """SH coefficients ``[9]`` of the shading of surface points ``rgb [M, 3]`` with unit ``normals``,
    separating it from a piecewise-constant albedo: points are grouped by chromaticity
    (:func:`chroma_clusters`), and the luminance is explained as ``a_k S(n)``, alternating a robust
    SH fit of ``S`` to ``L / a_k`` and the per-group median ``a_k`` of ``L / S``. A texture of
    different colours then does not bend the shading; one of equal chromaticity still can."""
    L = np.asarray(rgb, np.float64) @ LUMA
    labels = chroma_clusters(rgb)
    groups = np.unique(labels)
    a = np.ones(len(groups))
    s = fit_shading(L, normals)
    Y = sh9(np.asarray(normals, np.float64))
    for _ in range(rounds):
        S = np.maximum(Y @ s, 1e-3 * max(float(np.abs(Y @ s).max()), 1e-9))
        a = np.array([np.median(L[labels == g] / S[labels == g]) for g in groups])
        a = a / max(float(np.median(a[np.searchsorted(groups, labels)])), 1e-9)
        s = fit_shading(L / np.maximum(a[np.searchsorted(groups, labels)], 1e-6), normals)
    return s


# ---------------------------------------------------------------------------------------------
# Geometry of the prior
# ---------------------------------------------------------------------------------------------


def fibonacci_directions(n: int) -> np.ndarray:
    """``[n, 3]`` unit directions spread evenly over the sphere (Fibonacci lattice, Z up)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(np.maximum(1.0 - z * z, 0.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def orbit_cameras(n: int = VIS_VIEWS) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (viewmat [4, 4], K [3, 3]) cameras on a sphere of radius 2 looking at the origin."""
    from ..render.camera import intrinsics_from_fov, look_at

    K = intrinsics_from_fov(VIS_FOV_DEG, VIS_IMAGE, VIS_IMAGE)
    out = []
    for d in fibonacci_directions(n):
        up = (0.0, 1.0, 0.0) if abs(d[2]) > 0.99 else (0.0, 0.0, 1.0)
        out.append((np.asarray(look_at(VIS_RADIUS * d, up=up), np.float64), np.asarray(K, np.float64)))
    return out


@dataclass
class PriorGeometry:
    """What the geometry prior alone tells about its ``N`` voxels."""

    normals: np.ndarray  # [N, 3] unit, oriented outwards (towards the cameras that see the voxel)
    visibility: np.ndarray  # [N] fraction of the orbit cameras that see the voxel
    neighbours: np.ndarray  # [N, 26] index of each 26-neighbour, -1 where empty


def neighbour_table(coords: np.ndarray) -> np.ndarray:
    """``[N, 26]`` indices of the occupied 26-neighbours of each voxel (-1 where empty)."""
    c = np.asarray(coords, np.int64)
    return VoxelIndex(c).find(c[:, None, :] + NEIGHBOURS_26[None])


def prior_geometry(coords: np.ndarray, resolution: int = 64) -> PriorGeometry:
    """Normals, visibility and the neighbour table of voxels ``coords [N, 3]``."""
    import torch

    from ..sparse.surface_normals import voxel_surface_normals

    c = np.asarray(coords, np.int64)
    vox = torch.from_numpy(np.concatenate([np.zeros((len(c), 1), np.int64), c], 1))
    n = voxel_surface_normals(vox, resolution).numpy().astype(np.float64)
    full = np.ones((VIS_IMAGE, VIS_IMAGE, 4), np.float32)
    seen_count = np.zeros(len(c))
    towards = np.zeros((len(c), 3))
    for viewmat, K in orbit_cameras():
        f = project_image_features(full, viewmat, K, c, resolution)
        seen = f[:, 3] > 0.5
        seen_count += seen
        towards[seen] += f[seen, 4:7]
    centres = (c + 0.5) / resolution - 0.5
    outward = np.where((np.linalg.norm(towards, axis=1) > 1e-6)[:, None], towards, centres - centres.mean(0))
    n = n * np.where((n * outward).sum(1) < 0, -1.0, 1.0)[:, None]
    return PriorGeometry(n, seen_count / VIS_VIEWS, neighbour_table(c))


# ---------------------------------------------------------------------------------------------
# The image
# ---------------------------------------------------------------------------------------------


def fill_unseen(values: np.ndarray, known: np.ndarray, neighbours: np.ndarray, smooth: int = 2) -> np.ndarray:
    """``values [N, C]`` with the rows where ``known`` is False filled from the known rows nearest
    across the voxel graph (breadth-first: each ring takes the mean of its already-filled
    neighbours), then ``smooth`` rounds of neighbour averaging on the filled rows only. Rows that
    no known row reaches take the mean of the known rows (0 when none is known)."""
    v = np.asarray(values, np.float64).copy()
    have = np.asarray(known, bool).copy()
    if not have.any():
        return np.zeros_like(v)
    filled = np.zeros(len(v), bool)
    valid = neighbours >= 0
    nb = np.where(valid, neighbours, 0)
    while True:
        todo = ~have
        if not todo.any():
            break
        hit = valid & have[nb]  # [N, 26]
        ring = todo & hit.any(1)
        if not ring.any():
            break
        w = hit[ring].astype(np.float64)
        v[ring] = (v[nb[ring]] * w[..., None]).sum(1) / w.sum(1, keepdims=True)
        have[ring] = True
        filled[ring] = True
    rest = ~have
    if rest.any():
        v[rest] = v[np.asarray(known, bool)].mean(0)
        filled |= rest
    for _ in range(smooth):
        w = valid[filled].astype(np.float64)
        avg = (v[nb[filled]] * w[..., None]).sum(1) + v[filled]
        v[filled] = avg / (w.sum(1, keepdims=True) + 1.0)
    return v


# Image-level statistics the light model reads (its colour and level, :func:`fit_light_model`).
LIGHT_STAT_NAMES = (
    "log_lum_mean", "log_lum_p90", "log_lum_p10", "chroma_r", "chroma_g",
    *[f"sh_{i}" for i in range(1, 9)], "dark_fraction", "one",
)  # fmt: skip


def light_stats(rgb_seen: np.ndarray, shading_sh: np.ndarray, shade_seen: np.ndarray) -> np.ndarray:
    """``[len(LIGHT_STAT_NAMES)]`` statistics of one image's seen voxels: the log luminance (mean,
    90th and 10th percentile), the chromaticity of the mean colour, the shape of the fitted shading
    (its directional SH terms over its constant term) and the fraction of voxels it shades below
    half its mean (hard, directional light)."""
    lum = np.maximum(rgb_seen @ LUMA, 0.0)
    mean = rgb_seen.mean(0)
    chroma = mean / max(float(mean.sum()), 1e-9)
    return np.array(
        [np.log(lum.mean() + 1e-4), np.log(np.percentile(lum, 90) + 1e-4), np.log(np.percentile(lum, 10) + 1e-4),
         chroma[0], chroma[1], *(shading_sh[1:] / max(abs(float(shading_sh[0])), 1e-9)),
         float((shade_seen < 0.5).mean()), 1.0],
    )  # fmt: skip


@dataclass
class DelitImage:
    """One image delit on the prior's ``N`` voxels."""

    albedo: np.ndarray  # [N, 3] the image's colour with its shading divided out (image's level)
    seen: np.ndarray  # [N] bool: the input camera sees the voxel
    shading_sh: np.ndarray  # [9] the fitted shading (luminance, normalised to mean 1 on seen voxels)
    geometry: PriorGeometry
    lighting: np.ndarray  # [len(LIGHT_STAT_NAMES)] image statistics (:func:`light_stats`)

    def features(self, gain: np.ndarray | None = None) -> np.ndarray:
        """``[N, len(FEATURE_NAMES)]`` float64 calibration inputs (:data:`FEATURE_NAMES`), the delit
        colour multiplied by ``gain [3]`` (the light model's correction) when given."""
        g = self.geometry
        vis = g.visibility[:, None]
        albedo = self.albedo if gain is None else self.albedo * np.asarray(gain, np.float64)
        return np.concatenate(
            [albedo, albedo * vis, g.normals, vis, self.seen[:, None].astype(np.float64),
             np.ones_like(vis)], axis=1,
        )  # fmt: skip


def delight_image(
    rgba: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
    coords: np.ndarray,
    resolution: int = 64,
    geometry: PriorGeometry | None = None,
) -> DelitImage:
    """Delight ``rgba [H, W, 4]`` (premultiplied scene-linear) seen by ``(viewmat, K)`` on the prior
    voxels ``coords [N, 3]`` (module docstring, steps 1-2). ``geometry``: :func:`prior_geometry` of
    the same voxels when already computed (it depends on the prior only)."""
    c = np.asarray(coords, np.int64)
    geo = geometry if geometry is not None else prior_geometry(c, resolution)
    proj = project_image_features(np.asarray(rgba, np.float32), viewmat, K, c, resolution).astype(np.float64)
    seen = proj[:, 3] > 0.5
    if seen.sum() < 9:
        raise NearError(
            f"The input camera sees only {int(seen.sum())} voxels of the geometry prior: the image and the "
            "prior do not line up. Frame the prior with the camera exactly as in the photo."
        )
    rgb = proj[:, :3]
    n = geo.normals
    lum = rgb[seen] @ LUMA
    s = fit_shading_and_albedo(rgb[seen], n[seen])
    shade = sh9(n) @ s
    level = float(np.mean(shade[seen]))
    if not level > 0:
        level = float(np.mean(lum)) + 1e-6
    shade = shade / level
    stats = light_stats(rgb[seen], s, np.maximum(shade[seen], MIN_SHADE))
    # where the light hardly reaches, the image says little about the albedo: those voxels are
    # filled from their lit neighbours, as unseen ones are (unless too few voxels are lit)
    lit = seen & (shade >= MIN_SHADE)
    if lit.sum() < max(9, 0.1 * seen.sum()):
        lit = seen
    albedo = rgb / np.maximum(shade, MIN_SHADE)[:, None]
    a_lum = albedo @ LUMA
    cap = MAX_RATIO * max(float(np.median(a_lum[lit])), 1e-6)
    albedo *= np.minimum(1.0, cap / np.maximum(a_lum, 1e-9))[:, None]
    albedo = fill_unseen(albedo, lit, geo.neighbours)
    return DelitImage(albedo, seen, s / level, geo, stats)


# ---------------------------------------------------------------------------------------------
# Calibration: features -> LH-SLAT channels
# ---------------------------------------------------------------------------------------------


def default_channel_features(channels: int) -> list[list[str]]:
    """Which features each output channel combines, for the 8-channel ``colour_normal`` LH-SLAT
    (and the 16-channel LH + base-colour SLAT)."""
    lh: list[list[str]] = [
        *[[f"albedo_{c}", f"albedo_vis_{c}", "one"] for c in "rgb"],
        *[[f"normal_{a}"] for a in "xyz"],
        ["visibility", "albedo_vis_g", "one"],  # view dependence (glossiness) of the voxel
        ["visibility", "one"],
    ]
    bc: list[list[str]] = [
        # the base colour is the delit colour times a gain: an intercept (as the LH colour has) would
        # pull every colour towards the training mean and desaturate it (held-out L1 0.096 vs 0.083)
        *[[f"albedo_{c}"] for c in "rgb"],
        *[[f"normal_{a}"] for a in "xyz"],
        ["visibility", "one"],
        ["visibility", "one"],
    ]
    if channels == 8:
        return lh
    if channels == 16:
        return lh + bc
    raise NearError(f"The delighting stage 1 makes 8- or 16-channel LH-SLATs, not {channels}.")


def apply_calibration(features: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """``[N, C]`` float32 LH-SLAT from calibration ``features [N, F]`` and ``{"channels": [{"features":
    [names], "coef": [...]}, ...], "clip": [[lo, hi] | null, ...]}``."""
    idx = {name: i for i, name in enumerate(FEATURE_NAMES)}
    chans = calibration.get("channels")
    if not isinstance(chans, list) or not chans:
        raise NearError("The stage-1 calibration has no 'channels'; re-run `near train stage1-delight`.")
    out = np.zeros((len(features), len(chans)))
    for j, ch in enumerate(chans):
        names, coef = ch["features"], np.asarray(ch["coef"], np.float64)
        unknown = [nm for nm in names if nm not in idx]
        if unknown or len(coef) != len(names):
            raise NearError(f"Stage-1 calibration channel {j} is malformed (features {names}).")
        out[:, j] = features[:, [idx[nm] for nm in names]] @ coef
        lo_hi = ch.get("clip")
        if lo_hi is not None:
            out[:, j] = np.clip(out[:, j], lo_hi[0], lo_hi[1])
    return out.astype(np.float32)


def light_gain(lit: DelitImage, calibration: dict[str, Any]) -> np.ndarray | None:
    """``[3]`` colour gain of the calibration's light model for one delit image (None without one)."""
    light = calibration.get("light")
    if light is None:
        return None
    W = np.asarray(light["coef"], np.float64)
    if list(light.get("stats", [])) != list(LIGHT_STAT_NAMES) or W.shape != (3, len(LIGHT_STAT_NAMES)):
        raise NearError("The stage-1 calibration's light model does not match this version; re-run "
                        "`near train stage1-delight`.")  # fmt: skip
    return np.exp(np.clip(W @ lit.lighting, -4.0, 4.0))


def calibrated_slat(lit: DelitImage, calibration: dict[str, Any]) -> np.ndarray:
    """``[N, C]`` float32 LH-SLAT of one delit image: the light model's gain, then the channels."""
    return apply_calibration(lit.features(light_gain(lit, calibration)), calibration)


def fit_light_model(
    stats: np.ndarray, log_gains: np.ndarray, ridge: float = 1.0, use: Sequence[str] | None = None
) -> dict[str, Any]:
    """Ridge regression of per-image log colour gains ``[M, 3]`` (what turns the delit colour into
    the ground-truth base colour) on image statistics ``[M, len(LIGHT_STAT_NAMES)]``: the part of the
    input's light (level and colour) that the image lets a dataset's statistics predict. ``use``:
    the statistics it may read (default all); the others get weight 0."""
    keep = np.array([use is None or n in use for n in LIGHT_STAT_NAMES])
    X = np.asarray(stats, np.float64)[:, keep]
    reg = np.full(X.shape[1], ridge * len(X))
    reg[[n for n in np.array(LIGHT_STAT_NAMES)[keep]].index("one")] = 1e-9
    W = np.zeros((3, len(LIGHT_STAT_NAMES)))
    W[:, keep] = np.linalg.solve(X.T @ X + np.diag(reg), X.T @ np.asarray(log_gains, np.float64)).T
    return {"stats": list(LIGHT_STAT_NAMES), "coef": W.tolist()}


def oracle_log_gain(lit: DelitImage, idx: np.ndarray, truth: np.ndarray, colour: slice) -> np.ndarray:
    """``[3]`` log of the per-channel gain that best maps one image's delit colour on its seen voxels
    to the ground-truth colour channels ``truth[:, colour]`` (medians: robust to misprojections)."""
    seen = lit.seen[idx]
    est = lit.albedo[idx][seen]
    t = np.asarray(truth, np.float64)[seen][:, colour]
    return np.log(np.maximum(np.median(t, 0), 1e-3)) - np.log(np.maximum(np.median(est, 0), 1e-3))


def fit_calibration(
    samples: Sequence[tuple[np.ndarray, np.ndarray]], channel_features: list[list[str]] | None = None
) -> dict[str, Any]:
    """Least-squares calibration from ``(features [N, F], target LH-SLAT [N, C])`` pairs (one per
    training image); each channel's output is clipped to the target's 0.1-99.9 percentile range."""
    if not samples:
        raise NearError("No training samples to calibrate the delighting stage 1 on.")
    X = np.concatenate([np.asarray(f, np.float64) for f, _ in samples])
    T = np.concatenate([np.asarray(t, np.float64) for _, t in samples])
    spec = channel_features or default_channel_features(T.shape[1])
    idx = {name: i for i, name in enumerate(FEATURE_NAMES)}
    channels = []
    for j, names in enumerate(spec):
        A = X[:, [idx[nm] for nm in names]]
        coef = np.linalg.lstsq(A.T @ A + 1e-6 * np.eye(len(names)), A.T @ T[:, j], rcond=None)[0]
        lo, hi = np.percentile(T[:, j], [0.1, 99.9])
        channels.append(
            {"features": list(names), "coef": [float(x) for x in coef], "clip": [float(lo), float(hi)]}
        )
    return {"method": "delight", "channels": channels}
