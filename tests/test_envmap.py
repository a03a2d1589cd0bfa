"""Equirect conventions and environment validation (bpy-free; the Blender check is in test_bridge_world)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender import NearError
from near_blender.render import envmap as em


def test_cardinal_directions_land_where_blender_puts_them():
    # Cycles: u = 0.5 - atan2(y, x) / 2pi ; v = 1 - acos(z) / pi (v from the bottom).
    H, W = 64, 128
    cases = {
        (1, 0, 0): (0.5, 0.5),
        (0, 1, 0): (0.25, 0.5),
        (0, -1, 0): (0.75, 0.5),
        (0, 0, 1): (None, 1.0),
    }
    for d, (u, v) in cases.items():
        uu, vv = em.direction_to_uv(np.array(d, dtype=float))
        if u is not None:
            assert uu == pytest.approx(u)
        assert vv == pytest.approx(v)
    x, y = em.direction_to_pixel(np.array([1.0, 0, 0]), H, W)
    assert (x, y) == (pytest.approx(W / 2), pytest.approx(H / 2))
    x, y = em.direction_to_pixel(np.array([0.0, 0, 1]), H, W)
    assert y == pytest.approx(0.0)  # straight up is the top edge (row 0 is the top)


def test_direction_pixel_round_trip(rng):
    d = rng.normal(size=(1000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    x, y = em.direction_to_pixel(d, 50, 100)
    back = em.pixel_to_direction(x, y, 50, 100)
    np.testing.assert_allclose(back, d, atol=1e-12)


def test_solid_angles_sum_to_sphere():
    w = em.pixel_solid_angles(37, 74)
    assert w.sum() * 74 == pytest.approx(4 * math.pi, rel=1e-12)


def test_rotation_matches_lookup_definition(rng):
    img = rng.random((32, 64, 3)).astype(np.float32)
    angle = 2 * math.pi * 10 / 64  # a whole number of columns: exact
    env = em.Environment(img, rotation_z=angle)
    d = em.equirect_directions(32, 64)
    # baked(d) == image(Rz(angle) d) at pixel centres
    np.testing.assert_allclose(env.baked(), env.radiance_at(d), atol=1e-5)
    # the row sums (radiance) are preserved for any angle
    rot = em.rotate_equirect(img, 0.123)
    np.testing.assert_allclose(rot.sum(axis=1), img.sum(axis=1), rtol=1e-5)


def test_rotation_moves_a_patch_counter_clockwise():
    H, W = 32, 64
    img = np.zeros((H, W, 3), np.float32)
    img[15:17, 31:33] = 10.0  # around +X (image centre)
    env = em.Environment(img, rotation_z=math.pi / 2)
    # With the Mapping rotation +90 deg, world direction d sees texel Rz(90) d: the +X texel is
    # seen from d = Rz(-90) (+X) = -Y.
    assert env.radiance_at(np.array([0.0, -1.0, 0.0]))[0] > 5
    assert env.radiance_at(np.array([1.0, 0.0, 0.0]))[0] < 1e-6


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        (np.full((8, 16, 3), np.nan, np.float32), "NaN"),
        (np.full((8, 16, 3), np.inf, np.float32), "Inf"),
        (-np.ones((8, 16, 3), np.float32), "negative"),
        (np.full((8, 16, 3), -0.5, np.float32) + np.eye(8, 16, dtype=np.float32)[..., None], "negative"),
        (np.ones((8, 8, 3), np.float32), "twice as wide"),
        (np.ones((8, 16), np.float32), "shape"),
    ],
)
def test_bad_maps_give_clear_errors(bad, msg):
    with pytest.raises(NearError, match=msg):
        em.Environment(bad)


def test_tiny_negatives_of_lossy_encodings_are_clamped():
    img = np.ones((8, 16, 3), np.float32)
    img[0, :4, 0] = -0.002  # as in Blender's bundled studio HDRIs
    env = em.Environment(img)
    assert env.radiance.min() == 0.0 and env.radiance[0, 0, 0] == 0.0


def test_sanitize_is_documented_and_counts():
    img = np.ones((4, 8, 3), np.float32)
    img[0, 0, 0] = np.nan
    img[0, 1, 0] = np.inf
    img[0, 2, 0] = -3
    clean, counts = em.sanitize_radiance(img)
    assert counts == {"nan": 1, "posinf": 1, "neginf": 0, "negative": 1}
    assert np.isfinite(clean).all() and (clean >= 0).all()
    assert clean[0, 1, 0] == 1.0  # +Inf -> largest finite value


def test_uniform_environment_mean():
    env = em.Environment.uniform((0.5, 1.0, 2.0))
    w = em.pixel_solid_angles(env.height, env.width)  # solid-angle weighted mean radiance
    np.testing.assert_allclose((env.radiance * w[..., None]).sum(axis=(0, 1)) / (4 * np.pi), [0.5, 1.0, 2.0],
                               rtol=1e-6)  # fmt: skip
