"""Cameras and lights of the data generator: paper / TRELLIS ranges, seeding, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender import NearError
from near_blender.data import sampling as S
from near_blender.data.config import DatagenConfig

CFG = DatagenConfig(
    engine="cycles", resolution=32, samples=4, homog_views=5, shaded_views=5, cond_views=3, input_views=4,
    relit_views=3, relit_lights=2, holdout_envmaps=("night",), holdout_renders="all",
)  # fmt: skip
POOL = ["city", "forest", "studio"]


def _dirs_to_origin(cam) -> float:
    """Pixel distance of the projected origin from the image centre."""
    uv, z = cam.project(np.zeros((1, 3)))
    assert z[0] > 0
    return float(np.abs(uv[0] - [cam.width / 2, cam.height / 2]).max())


def test_plan_is_reproducible_and_asset_specific():
    a = S.plan_asset("asset-a", CFG, POOL, ["night"])
    b = S.plan_asset("asset-a", CFG, POOL, ["night"])
    c = S.plan_asset("asset-b", CFG, POOL, ["night"])
    assert len(a) == S.count_renders(CFG, 1) == 5 + 5 + 3 + 4 * (1 + 1) + 3 * (2 + 1)
    for x, y in zip(a, b, strict=True):
        assert x.file == y.file and x.lighting == y.lighting
        np.testing.assert_array_equal(x.camera.viewmat, y.camera.viewmat)
    assert any(not np.allclose(x.camera.viewmat, y.camera.viewmat) for x, y in zip(a, c, strict=True))
    assert len({t.file for t in a}) == len(a)  # every render has its own file
    # A different seed changes the data.
    d = S.plan_asset("asset-a", DatagenConfig(**{**CFG.to_dict(), "holdout_envmaps": ("night",), "seed": 1}), POOL,
                     ["night"])  # fmt: skip
    assert not np.allclose(a[0].camera.viewmat, d[0].camera.viewmat)


def test_held_out_map_views_only_for_held_out_assets():
    """Default ``holdout_renders='held_out'``: the held-out maps' views (read only by the evaluation,
    on held-out assets) are planned for the assets the dataset split holds out, and for no other;
    every other view is the same as with ``'all'``."""
    from near_blender.data.dataset import NearDataset
    from near_blender.data.layout import is_held_out

    cfg = DatagenConfig(**{**CFG.to_dict(), "holdout_renders": "held_out"})
    ids = [f"proc-{i:04d}-x" for i in range(40)]
    held = [a for a in ids if is_held_out(a)]
    assert 2 <= len(held) <= 16  # ~20% by a hash of the id
    for a in ids:
        plan = S.plan_asset(a, cfg, POOL, ["night"])
        n_maps = len(S.holdout_maps(a, cfg, ["night"]))
        assert len(plan) == S.count_renders(cfg, n_maps)
        holdout_views = [t for t in plan if t.set.endswith("_holdout")]
        assert len(holdout_views) == (4 + 3 if a in held else 0)
        full = {t.file: t for t in S.plan_asset(a, CFG, POOL, ["night"])}
        for t in plan:
            assert t.lighting == full[t.file].lighting
    # the split the trainers use is the same hash
    assert NearDataset.split.__defaults__ == (0.2,)
    # datasets written before the option rendered every asset's held-out views, with Blender's
    # default denoiser prefilter; their config.json (without the keys) reads back that way
    legacy = {k: v for k, v in CFG.to_dict().items() if k not in ("holdout_renders", "denoise_prefilter")}
    old = DatagenConfig.from_dict(legacy)
    assert (old.holdout_renders, old.denoise_prefilter) == ("all", "accurate")
    assert (DatagenConfig().holdout_renders, DatagenConfig().denoise_prefilter) == ("held_out", "fast")
    with pytest.raises(NearError, match="--holdout-renders"):
        DatagenConfig(holdout_renders="some")


def test_views_do_not_depend_on_how_many_are_asked():
    few = S.plan_asset("x", DatagenConfig(input_views=2, relit_views=1, relit_lights=1, homog_views=0, shaded_views=0,
                                          cond_views=0), POOL, [])  # fmt: skip
    many = S.plan_asset("x", DatagenConfig(input_views=5, relit_views=3, relit_lights=4, homog_views=0, shaded_views=0,
                                           cond_views=0), POOL, [])  # fmt: skip
    by_file = {t.file: t for t in many}
    for t in few:
        assert t.lighting == by_file[t.file].lighting
        np.testing.assert_array_equal(t.camera.viewmat, by_file[t.file].camera.viewmat)


def test_every_camera_looks_at_the_origin_with_the_set_conventions():
    tasks = S.plan_asset("cams", CFG, POOL, ["night"])
    for t in tasks:
        assert _dirs_to_origin(t.camera) < 1e-9
        assert np.linalg.norm(t.camera.position) == pytest.approx(t.params["radius"])
        fx = t.camera.K[0, 0]
        assert 2 * math.degrees(math.atan(CFG.resolution / 2 / fx)) == pytest.approx(t.params["fov_deg"])
        if t.set in ("homog", "shaded", "relit", "relit_holdout"):
            assert t.params["radius"] == 2.0 and t.params["fov_deg"] == 40.0
    # shaded views reuse the homogenized cameras (pixel-aligned pairs)
    homog = [t for t in tasks if t.set == "homog"]
    shaded = [t for t in tasks if t.set == "shaded"]
    for h, s in zip(homog, shaded, strict=True):
        np.testing.assert_array_equal(h.camera.viewmat, s.camera.viewmat)
    # inputs_holdout views reuse the input cameras (the relighting ground truth of that image)
    inputs = {t.index: t for t in tasks if t.set == "inputs"}
    for t in (t for t in tasks if t.set == "inputs_holdout"):
        np.testing.assert_array_equal(t.camera.viewmat, inputs[t.meta["view"]].camera.viewmat)
        assert t.lighting["envmap"] == "night"
    # relit lights of one view share its camera
    relit = [t for t in tasks if t.set in ("relit", "relit_holdout")]
    for t in relit:
        first = next(r for r in relit if r.meta["view"] == t.meta["view"])
        np.testing.assert_array_equal(t.camera.viewmat, first.camera.viewmat)


def test_hammersley_matches_trellis_formula():
    # TRELLIS utils.sphere_hammersley_sequence with n = 8, offset (0.3, 0.6), point 5
    n, i, off = 8, 5, (0.3, 0.6)
    u = i / n + off[0] / n
    v = 0.5 + 0.0 + 0.125 + off[1]  # radical inverse of 5 = 0b101 -> 0.101b = 0.625
    u = 2 * u if u < 0.25 else 2 / 3 * u + 1 / 3
    want = (v * 2 * math.pi, math.acos(1 - 2 * u) - math.pi / 2)
    assert S.hammersley_yaw_pitch(i, n, off) == pytest.approx(want)
    assert S.radical_inverse(2, 5) == 0.625


def test_input_view_and_lighting_statistics_follow_the_paper():
    """3000 seeded draws: every value inside the configured range, the ranges filled, modes balanced."""
    n = 3000
    yaws, pitches, fovs, modes, powers, dists, n_hemi, rots = [], [], [], [], [], [], [], []
    for i in range(n):
        rng = S.stream_rng(0, "stats", "inputs", i)
        p = S.input_view_params(rng, -90.0)
        cam_dir = S.make_camera(p["yaw_deg"], p["pitch_deg"], 1.0, 40.0, 8).position
        light = S.input_lighting(rng, cam_dir, POOL, 1.0)
        yaws.append(p["yaw_deg"])
        pitches.append(p["pitch_deg"])
        fovs.append(p["fov_deg"])
        # TRELLIS: the asset's bounding sphere (radius sqrt(3)/2) exactly fills the FOV
        assert math.sin(math.radians(p["fov_deg"]) / 2) * p["radius"] == pytest.approx(math.sqrt(3) / 2)
        modes.append(light["mode"])
        if light["type"] == "lights":
            for lt in light["lights"]:
                pos = np.array(lt["position"])
                assert np.linalg.norm(pos) == pytest.approx(lt["distance"])
                np.testing.assert_allclose(lt["direction"], -pos / np.linalg.norm(pos), atol=1e-12)
                powers.append(lt["power_w"])
                dists.append(lt["distance"])
            if light["mode"] == "six_area":
                d = np.array([lt["position"] for lt in light["lights"]])
                d /= np.linalg.norm(d, axis=1, keepdims=True)
                g = np.abs(d @ d.T)  # an octahedron: each pair orthogonal or opposite
                assert np.all((np.abs(g) < 1e-9) | (np.abs(g - 1) < 1e-9))
                np.testing.assert_allclose(d.sum(axis=0), 0, atol=1e-9)
            else:
                n_hemi.append(len(light["lights"]))
                for lt in light["lights"]:
                    assert np.dot(lt["position"], cam_dir) > 0  # in the camera's hemisphere
        else:
            assert light["envmap"] in POOL
            rots.append(light["rotation_z"])
    yaws, pitches, fovs = map(np.array, (yaws, pitches, fovs))
    assert yaws.min() >= -135 and yaws.max() <= -45 and yaws.min() < -133 and yaws.max() > -47
    assert pitches.min() >= -10 and pitches.max() <= 45 and pitches.min() < -9 and pitches.max() > 44
    assert fovs.min() >= 10 - 1e-9 and fovs.max() <= 70 + 1e-9 and fovs.min() < 12 and fovs.max() > 68
    powers, dists = np.array(powers), np.array(dists)
    assert powers.min() >= 300 and powers.max() <= 700 and abs(powers.mean() - 500) < 5
    assert dists.min() >= 5 and dists.max() <= 8 and abs(dists.mean() - 6.5) < 0.05
    counts = {m: modes.count(m) for m in S.INPUT_MODES}
    for c in counts.values():  # 1/3 each: 5 sigma of a binomial(3000, 1/3) is ~130
        assert abs(c - n / 3) < 130, counts
    assert set(n_hemi) == {1, 2, 3}
    rots = np.array(rots)
    assert rots.min() >= 0 and rots.max() < 2 * math.pi and abs(rots.mean() - math.pi) < 0.15


def test_relit_cameras_are_uniform_on_the_sphere():
    d = np.array(
        [S.make_camera(**_kw(S.relit_view_params(S.stream_rng(3, "u", i)))).position for i in range(4000)]
    )
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 2.0)
    assert np.abs(d.mean(axis=0)).max() < 0.08  # uniform: mean ~ 0 (sd of the mean ~0.018 per axis)
    assert abs((d[:, 2] > 0).mean() - 0.5) < 0.04
    assert abs(np.mean(d[:, 2] ** 2) - 4 / 3) < 0.06  # E[z^2] = r^2 / 3


def _kw(p):
    return {"yaw_deg": p["yaw_deg"], "pitch_deg": p["pitch_deg"], "radius": p["radius"], "fov_deg": p["fov_deg"],
            "resolution": 8}  # fmt: skip


def test_envmap_lighting_needs_a_pool():
    with pytest.raises(NearError, match="No usable environment maps"):
        S.envmap_lighting(np.random.default_rng(0), [], "relit")


def _rotation_of_quaternion_formula(rng: np.random.Generator) -> np.ndarray:
    """random_rotation's numbers before it used render.quaternion (the datagen seeds' reference)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_random_rotation_keeps_the_datagen_numbers_and_is_uniform():
    for seed in range(200):  # same seed, same matrix, bit for bit (six_area lights of shipped plans)
        R = S.random_rotation(np.random.default_rng(seed))
        assert R.dtype == np.float64 and R.shape == (3, 3)
        assert np.array_equal(R, _rotation_of_quaternion_formula(np.random.default_rng(seed)))
    rng = np.random.default_rng(7)
    Rs = np.stack([S.random_rotation(rng) for _ in range(4000)])
    np.testing.assert_allclose(Rs @ Rs.transpose(0, 2, 1), np.broadcast_to(np.eye(3), Rs.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(Rs), 1.0, atol=1e-12)
    # Haar measure: every rotated axis is uniform on the sphere (mean 0, second moments I/3)
    axes = Rs[:, :, 0]
    assert np.abs(axes.mean(0)).max() < 0.05
    np.testing.assert_allclose(axes.T @ axes / len(axes), np.eye(3) / 3, atol=0.03)
