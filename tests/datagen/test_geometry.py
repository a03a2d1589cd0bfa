"""Voxelization, back-projection with visibility, the built-in feature and the shadow pass (bpy-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data.backproject import Aggregate, accumulate, visibility
from near_blender.data.features import ColourNormalFeature, get_extractor
from near_blender.data.sampling import make_camera
from near_blender.data.shadow import irradiance_at, irradiance_map, shadow_from_passes
from near_blender.data.voxelize import triangle_box_overlap, voxel_centres, voxelize_triangles
from near_blender.render.envmap import Environment, equirect_directions, pixel_solid_angles, rotation_z

R = 0.45  # test sphere radius


def sphere_triangles(radius: float = R, nu: int = 96, nv: int = 48) -> np.ndarray:
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, nu + 1), np.linspace(0, np.pi, nv + 1))
    P = np.stack([np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v)], -1) * radius
    a, b, c, d = P[:-1, :-1], P[1:, :-1], P[1:, 1:], P[:-1, 1:]
    return np.concatenate(
        [np.stack([a, b, c], 2).reshape(-1, 3, 3), np.stack([a, c, d], 2).reshape(-1, 3, 3)]
    )


def _clip_overlap(tri: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Reference: clip the triangle polygon by the six box planes (Sutherland-Hodgman)."""
    poly = [p for p in tri]
    for axis in range(3):
        for sign, bound in ((1, lo[axis]), (-1, hi[axis])):
            out = []
            for i in range(len(poly)):
                p, q = poly[i], poly[(i + 1) % len(poly)]
                fp, fq = sign * (p[axis] - bound), sign * (q[axis] - bound)
                if fp >= 0:
                    out.append(p)
                if (fp >= 0) != (fq >= 0):
                    out.append(p + (q - p) * (fp / (fp - fq)))
            poly = out
            if not poly:
                return False
    return True


def test_triangle_box_test_matches_polygon_clipping():
    rng = np.random.default_rng(3)
    tris = rng.uniform(-1.5, 1.5, (4000, 3, 3))
    centres = rng.uniform(-1, 1, (4000, 3))
    got = triangle_box_overlap(tris, centres, 0.5)
    want = np.array([_clip_overlap(t, c - 0.5, c + 0.5) for t, c in zip(tris, centres, strict=True)])
    assert (got == want).all()
    assert 0.2 < want.mean() < 0.8  # both outcomes well represented


def test_sphere_voxels_are_exactly_the_surface_shell():
    tris = sphere_triangles()
    coords = voxelize_triangles(tris)
    assert coords.dtype == np.int64 and coords.min() >= 0 and coords.max() < 64
    assert len(np.unique(coords, axis=0)) == len(coords)
    # sound: every voxel box reaches the (tessellated) sphere surface
    c = voxel_centres(coords)
    r = np.linalg.norm(c, axis=1)
    half_diag = math.sqrt(3) / 2 / 64
    assert r.max() <= R + half_diag + 1e-9 and r.min() >= R * math.cos(math.pi / 48) - half_diag - 1e-9
    # complete: every point of every triangle lies in a voxel of the set
    rng = np.random.default_rng(0)
    w = rng.dirichlet([1, 1, 1], size=len(tris))
    pts = np.einsum("fk,fkc->fc", w, tris)
    keys = {tuple(v) for v in coords}
    cells = np.clip(np.floor((pts + 0.5) * 64), 0, 63).astype(int)
    assert all(tuple(v) in keys for v in cells)


def test_axis_aligned_cube_fills_the_boundary_layer():
    # the 12 triangles of the [-0.5, 0.5]^3 cube: TRELLIS clamps them just inside -> the outer voxel layer
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = np.array(
        [[v[q[0]], v[q[1]], v[q[2]]] for q in quads] + [[v[q[0]], v[q[2]], v[q[3]]] for q in quads]
    )
    coords = voxelize_triangles(tris)
    assert len(coords) == 64**3 - 62**3
    assert ((coords == 0) | (coords == 63)).any(axis=1).all()
    with pytest.raises(NearError, match="no triangles"):
        voxelize_triangles(np.zeros((0, 3, 3)))
    with pytest.raises(NearError, match="NaN"):
        voxelize_triangles(np.full((1, 3, 3), np.nan))


def render_sphere(cam):
    """Analytic render of the sphere: (colour [H,W,3] premultiplied, normal, depth, alpha)."""
    o, d = cam.pixel_rays()
    b = np.einsum("hwc,hwc->hw", o, d)
    disc = b * b - (np.einsum("hwc,hwc->hw", o, o) - R * R)
    hit = disc > 0
    t = -b - np.sqrt(np.where(hit, disc, 0))
    p = o + t[..., None] * d
    n = np.where(hit[..., None], p / R, 0.0)
    depth = np.where(hit, t * np.einsum("hwc,c->hw", d, cam.forward), 0.0)
    colour = np.where(hit[..., None], 0.5 + 0.5 * n, 0.0)
    return colour, n, depth, hit.astype(np.float64)


def test_backprojection_sees_front_voxels_and_recovers_colour_and_normal():
    coords = voxelize_triangles(sphere_triangles())
    centres = voxel_centres(coords)
    true_n = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    feat = ColourNormalFeature()
    agg = Aggregate.empty(len(coords), 7)
    cams = [make_camera(yaw, pitch, 2.0, 40.0, 96) for yaw, pitch in [(0, 0), (90, 20), (180, -10), (270, 40),
                                                                         (45, -60), (135, 75)]]  # fmt: skip
    facing_all = []
    for cam in cams:
        colour, n, depth, alpha = render_sphere(cam)
        to_cam = cam.position - centres
        facing = np.einsum("nc,nc->n", true_n, to_cam / np.linalg.norm(to_cam, axis=1, keepdims=True))
        vis = accumulate(agg, coords, cam, feat.view_maps(colour, n, alpha), depth, alpha, n)
        assert vis[facing > 0.3].mean() > 0.995  # the front is seen
        assert not vis[facing < -0.3].any()  # the back is hidden by the front
        facing_all.append(facing)
    feats = feat.finalize(agg)
    assert feats.shape == (len(coords), 8) and feats.dtype == np.float32
    good = np.max(facing_all, axis=0) > 0.6
    err = np.abs(feats[good, :3] - (0.5 + 0.5 * true_n[good]))
    assert np.median(err) < 0.01 and err.max() < 0.09  # the centre sits up to half a voxel off the surface
    assert np.median(np.einsum("nc,nc->n", feats[good, 3:6], true_n[good])) > 0.99
    assert np.median(feats[good, 6]) < 0.01  # view-independent colour: (almost) no spread
    np.testing.assert_allclose(feats[:, 7], agg.count / len(cams))
    assert feats[:, 7].max() <= 1 and 0.2 < feats[:, 7].mean() < 0.6
    # a view-dependent appearance (every other view twice as bright) shows up in channel 6
    agg2 = Aggregate.empty(len(coords), 7)
    for i, cam in enumerate(cams):
        colour, n, depth, alpha = render_sphere(cam)
        accumulate(agg2, coords, cam, feat.view_maps(colour * (1 + i % 2), n, alpha), depth, alpha, n)
    spread = feat.finalize(agg2)[:, 6]
    seen_twice = (agg2.count >= 2) & good
    assert np.median(spread[seen_twice]) > 10 * max(np.median(feats[good, 6]), 1e-3)


def test_visibility_tolerance_and_frame():
    cam = make_camera(0, 0, 2.0, 40.0, 32)
    depth = np.full((32, 32), 1.5)
    alpha = np.ones((32, 32))
    pts = np.array([[0.5, 0, 0], [0.47, 0, 0], [0.3, 0, 0], [0, 5, 0]])  # camera on +X, z = 2 - x
    vis, in_frame, _ = visibility(cam, pts, depth, alpha, tol=math.sqrt(3) / 64)
    assert vis.tolist() == [True, True, False, False]
    assert in_frame.tolist() == [True, True, True, False]


def test_feature_registry():
    assert get_extractor("colour_normal").channels == 8
    with pytest.raises(NearError, match="colour_normal"):
        get_extractor("dinov2")
    with pytest.raises(NearError, match="Unknown feature"):
        get_extractor("clip")


def _lobes_env(h: int = 64) -> np.ndarray:
    d = equirect_directions(h, 2 * h)
    sun = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    img = 0.2 + 3.0 * np.maximum(d @ sun, 0) ** 8 + 0.5 * np.maximum(d[..., 0], 0)
    return np.stack([img, 0.8 * img, 0.6 * img], -1).astype(np.float32)


def _brute_irradiance(env: Environment, normals: np.ndarray, h: int = 256) -> np.ndarray:
    d = equirect_directions(h, 2 * h).reshape(-1, 3)
    L = env.radiance_at(d) * np.broadcast_to(pixel_solid_angles(h, 2 * h), (h, 2 * h)).reshape(-1, 1)
    return np.maximum(normals @ d.T, 0) @ L


def test_irradiance_matches_brute_force_including_rotation():
    uniform = Environment.uniform((0.5, 1.0, 2.0), height=32)
    np.testing.assert_allclose(irradiance_map(uniform.radiance), np.broadcast_to(np.pi * np.array([0.5, 1.0, 2.0]), (32, 64, 3)),
                               rtol=2e-3)  # fmt: skip
    rng = np.random.default_rng(5)
    n = rng.normal(size=(40, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    for angle in (0.0, 1.1, 4.0):
        env = Environment(_lobes_env(), rotation_z=angle)
        got = irradiance_at(env, n)
        want = _brute_irradiance(env, n)
        np.testing.assert_allclose(got, want, rtol=0.015)
        # rotating the map = looking it up with Rz(angle) n
        np.testing.assert_allclose(
            got, irradiance_at(Environment(_lobes_env()), n @ rotation_z(angle).T), rtol=1e-6
        )


def test_shadow_ratio_definition():
    env = Environment(_lobes_env())
    rng = np.random.default_rng(1)
    n = rng.normal(size=(8, 8, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    unoccluded = irradiance_at(env, n.reshape(-1, 3)).reshape(8, 8, 3) / math.pi
    colour = np.full((8, 8, 3), 0.5)
    alpha = np.ones((8, 8))
    alpha[0] = 0.6  # a partially covered row: undefined
    colour[1] = 0.0  # no diffuse component (metal): undefined
    s, w = shadow_from_passes(0.3 * unoccluded, n, colour, alpha, env)
    assert s.dtype == np.float32 and w.dtype == np.float32
    np.testing.assert_allclose(s[2:], 0.3, rtol=1e-5)
    assert (w[2:] == 1).all() and (w[:2] == 0).all() and (s[:2] == 1).all()
    s_full, _ = shadow_from_passes(1.4 * unoccluded, n, colour, alpha, env)
    assert (s_full[2:] == 1).all()  # inter-reflections above 1 are clipped
