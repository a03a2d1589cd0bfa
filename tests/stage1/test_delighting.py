"""The delighting stage 1 (near_blender.data.delighting) against analytic scenes.

The reference is independent of the code under test: a voxelized sphere whose surface carries a
known albedo pattern, rendered per pixel by ray-sphere intersection under a known Lambertian
lighting (ambient + one directional light). Delighting must recover the albedo pattern far better
than the raw projected image does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.delighting import (
    FEATURE_NAMES,
    apply_calibration,
    delight_image,
    fill_unseen,
    fit_calibration,
    fit_shading,
    neighbour_table,
    prior_geometry,
    sh9,
)
from near_blender.render.camera import intrinsics_from_fov, look_at

RES = 64
RADIUS = 0.35


def sphere_voxels(radius: float = RADIUS) -> np.ndarray:
    """Voxels ``[N, 3]`` of a 64^3 grid whose centre lies within half a voxel of the sphere."""
    g = np.arange(RES)
    c = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    p = (c + 0.5) / RES - 0.5
    return c[np.abs(np.linalg.norm(p, axis=1) - radius) < 0.75 / RES]


def albedo_at(p: np.ndarray) -> np.ndarray:
    """The sphere's true albedo ``[..., 3]``: 12 alternating red and blue-green sectors of azimuth
    around Z with a light grey cap above z = 0.25 (a texture, not aligned with the light)."""
    sector = np.floor((np.arctan2(p[..., 1], p[..., 0]) + math.pi) / (2 * math.pi) * 12).astype(int) % 2
    out = np.where(sector[..., None] == 0, np.array([0.8, 0.15, 0.1]), np.array([0.1, 0.5, 0.6]))
    out[p[..., 2] > 0.25] = (0.7, 0.7, 0.7)
    return out


def render_sphere(
    light_dir: np.ndarray, ambient: float, size: int = 96
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(premultiplied rgba [size, size, 4], viewmat, K) of the albedo sphere seen from +X-ish."""
    eye = np.array([1.6, 0.5, 0.4])
    V = np.asarray(look_at(eye), np.float64)
    K = np.asarray(intrinsics_from_fov(40.0, size, size), np.float64)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    d_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    R, t = V[:3, :3], V[:3, 3]
    o = -R.T @ t
    d = d_cam @ R  # camera -> world directions (rows)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    b = (d * o).sum(-1)
    disc = b * b - (o @ o - RADIUS**2)
    hit = disc > 0
    s = -b - np.sqrt(np.maximum(disc, 0))
    p = o + d * s[..., None]
    n = p / RADIUS
    ldir = light_dir / np.linalg.norm(light_dir)
    shade = ambient + np.clip(n @ ldir, 0, None)
    rgb = albedo_at(p) * shade[..., None]
    rgba = np.zeros((size, size, 4), np.float32)
    rgba[hit, :3] = rgb[hit]
    rgba[hit, 3] = 1.0
    return rgba, V, K


def test_sh9_is_orthonormal_on_the_sphere() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(400_000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    Y = sh9(v)
    gram = Y.T @ Y * (4 * math.pi / len(v))  # Monte-Carlo integral of Y_i Y_j over the sphere
    assert np.allclose(gram, np.eye(9), atol=0.02)


def test_fit_shading_recovers_a_smooth_shading_despite_outliers() -> None:
    rng = np.random.default_rng(1)
    n = rng.normal(size=(3000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n = n[n[:, 0] > -0.2]  # roughly the hemisphere one camera sees
    true = 0.6 + 0.3 * n[:, 0] + 0.2 * n[:, 2]
    obs = true.copy()
    bad = rng.random(len(n)) < 0.1  # cast shadows: 10% of the points much darker
    obs[bad] *= 0.2
    s = fit_shading(obs, n)
    assert np.abs(sh9(n) @ s - true).mean() < 0.02
    plain = np.linalg.lstsq(sh9(n), obs, rcond=None)[0]  # a non-robust fit is pulled down
    assert np.abs(sh9(n) @ plain - true).mean() > 2 * np.abs(sh9(n) @ s - true).mean()


def test_fill_unseen_takes_the_nearest_known_voxels() -> None:
    coords = np.array([[i, 0, 0] for i in range(6)])
    nb = neighbour_table(coords)
    assert sorted(nb[2][nb[2] >= 0].tolist()) == [1, 3]
    vals = np.array([[1.0], [0], [0], [0], [0], [5.0]])
    known = np.array([True, False, False, False, False, True])
    out = fill_unseen(vals, known, nb, smooth=0)
    # ring 1: voxels 1 and 4 copy their known neighbours; ring 2: voxels 2 and 3 copy those
    assert out[:, 0].tolist() == [1.0, 1.0, 1.0, 5.0, 5.0, 5.0]


def test_prior_geometry_normals_point_outwards_and_visibility_is_a_fraction() -> None:
    c = sphere_voxels()
    geo = prior_geometry(c)
    p = (c + 0.5) / RES - 0.5
    radial = p / np.linalg.norm(p, axis=1, keepdims=True)
    cos = (geo.normals * radial).sum(1)
    assert np.median(cos) > 0.97 and (cos > 0.5).mean() > 0.98
    assert 0.2 < geo.visibility.mean() < 0.6 and geo.visibility.min() >= 0 and geo.visibility.max() <= 1


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, object]:
    c = sphere_voxels()
    return c, prior_geometry(c)


def test_delighting_recovers_the_albedo_pattern(sphere) -> None:
    c, geo = sphere
    rgba, V, K = render_sphere(light_dir=np.array([0.6, 0.9, 0.3]), ambient=0.25)
    lit = delight_image(rgba, V, K, c, geometry=geo)
    p = (c + 0.5) / RES - 0.5
    truth = albedo_at(p)
    seen = lit.seen
    assert 0.25 < seen.mean() < 0.6
    from near_blender.data.image_projection import project_image_features

    raw = project_image_features(rgba, V, K, c)[:, :3]

    def rel_err(est: np.ndarray) -> float:  # after the best global gain (the level is unknowable)
        k = (est[seen] * truth[seen]).sum() / (est[seen] ** 2).sum()
        return float(np.abs(k * est[seen] - truth[seen]).mean() / truth[seen].mean())

    print(f"relative albedo error on seen voxels: delit {rel_err(lit.albedo):.3f}, raw {rel_err(raw):.3f}")
    assert rel_err(lit.albedo) < 0.12
    assert rel_err(raw) > 2.0 * rel_err(lit.albedo)
    # unseen voxels are filled from their seen neighbours, not left black
    unseen = ~seen
    assert (lit.albedo[unseen].sum(1) > 0.05).all()
    # the far side's colours follow the nearest seen part: the grey cap stays grey all round
    cap = unseen & (p[:, 2] > 0.3)
    chroma = lit.albedo[cap].max(1) / lit.albedo[cap].min(1)
    assert cap.sum() > 20 and (chroma < 1.3).mean() > 0.9


def test_delighting_depends_on_the_image_and_not_on_the_light(sphere) -> None:
    c, geo = sphere
    a, V, K = render_sphere(light_dir=np.array([0.6, 0.9, 0.3]), ambient=0.25)
    b, _, _ = render_sphere(light_dir=np.array([0.8, -0.7, 0.5]), ambient=0.25)
    swapped = a.copy()
    swapped[..., :3] = a[..., [2, 1, 0]]  # the same shading, other colours
    la, lb, ls = (delight_image(x, V, K, c, geometry=geo) for x in (a, b, swapped))
    seen = la.seen & lb.seen
    from near_blender.data.image_projection import project_image_features

    ra, rb = (project_image_features(x, V, K, c)[:, :3] for x in (a, b))

    def diff(x: np.ndarray, y: np.ndarray) -> float:  # after removing each one's overall level
        return float(np.abs(x[seen] / x[seen].mean() - y[seen] / y[seen].mean()).mean())

    other_light = diff(la.albedo, lb.albedo)
    print(
        f"other light: delit {other_light:.3f} vs raw {diff(ra, rb):.3f}; "
        f"other colours: {diff(la.albedo, ls.albedo):.3f}"
    )
    assert other_light < 0.4 * diff(ra, rb)
    assert diff(la.albedo, ls.albedo) > 2.5 * other_light


def test_a_camera_that_misses_the_prior_is_a_clear_error(sphere) -> None:
    c, geo = sphere
    rgba, V, K = render_sphere(light_dir=np.array([0.6, 0.9, 0.3]), ambient=0.25)
    V2 = V.copy()
    V2[:3, 3] += np.array([5.0, 0.0, 0.0])  # moved far sideways: nothing projects into the image
    with pytest.raises(NearError, match="do not line up"):
        delight_image(rgba, V2, K, c, geometry=geo)


def test_calibration_recovers_known_linear_maps() -> None:
    rng = np.random.default_rng(3)
    F = rng.random((500, len(FEATURE_NAMES)))
    F[:, FEATURE_NAMES.index("one")] = 1.0
    spec = [["albedo_r", "one"], ["visibility", "albedo_vis_g"]]
    T = np.stack([0.7 * F[:, 0] + 0.1, 2.0 * F[:, 9] - 0.5 * F[:, 4]], 1)
    cal = fit_calibration([(F[:250], T[:250]), (F[250:], T[250:])], spec)
    assert np.allclose(cal["channels"][0]["coef"], [0.7, 0.1], atol=1e-4)
    assert np.allclose(cal["channels"][1]["coef"], [2.0, -0.5], atol=1e-4)
    unclipped = {"channels": [{**ch, "clip": None} for ch in cal["channels"]]}
    assert np.allclose(apply_calibration(F, unclipped), T, atol=1e-3)
    lo, hi = cal["channels"][0]["clip"]  # the output stays within the targets' range
    assert np.percentile(T[:, 0], 0.05) <= lo < hi <= np.percentile(T[:, 0], 99.95)
    assert apply_calibration(F * 10, cal)[:, 0].max() <= hi + 1e-6
    with pytest.raises(NearError, match="malformed"):
        apply_calibration(F, {"channels": [{"features": ["nope"], "coef": [1.0]}]})
