"""Irradiance of equirect maps, Lambertian shading and area lights as maps, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender.eval.irradiance import Irradiance, lambertian
from near_blender.eval.lights import lights_environment
from near_blender.render.envmap import Environment, equirect_directions, pixel_solid_angles
from near_blender.render.irradiance import block_average


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("rotation", [0.0, 1.3])
def test_constant_map_gives_pi_L_and_lambertian_gives_albedo_times_L(rotation):
    L = np.array([0.5, 1.0, 2.0], np.float32)
    env = Environment(np.broadcast_to(L, (64, 128, 3)).copy(), rotation)
    n = _unit(np.random.default_rng(0), 200)
    E = Irradiance(env)(n)
    np.testing.assert_allclose(E, np.broadcast_to(math.pi * L, E.shape), rtol=3e-3)
    albedo = np.array([0.8, 0.4, 0.1])
    np.testing.assert_allclose(lambertian(albedo, n, Irradiance(env)), np.broadcast_to(albedo * L, E.shape),
                               rtol=3e-3)  # fmt: skip


def test_downsampling_keeps_the_radiant_power():
    img = np.random.default_rng(1).gamma(0.3, 2.0, size=(64, 128, 3))
    total = (img * pixel_solid_angles(64, 128)[..., None]).sum(axis=(0, 1))
    for h in (32, 8, 5):
        rad, omega = block_average(img, h)
        assert rad.shape[0] in (32, 8, 4) and rad.shape[1] == 2 * rad.shape[0]
        np.testing.assert_allclose((rad * omega[..., None]).sum(axis=(0, 1)), total, rtol=1e-10)
        assert abs(omega.sum() - 4 * math.pi) < 1e-9


def test_upper_hemisphere_map_closed_forms():
    """L = 1 above the horizon (z > 0): E(+z) = pi, E(-z) = 0, E(horizontal) = pi / 2."""
    dirs = equirect_directions(64, 128)
    img = np.repeat((dirs[..., 2:] > 0).astype(np.float32), 3, axis=-1)
    irr = Irradiance(Environment(img, 0.7))
    E = irr(np.array([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]]))[:, 0]
    np.testing.assert_allclose(E, [math.pi, 0.0, math.pi / 2, math.pi / 2], atol=5e-3)


@pytest.mark.parametrize("rotation", [0.0, 0.9, -2.4])
def test_clamped_cosine_lobe_follows_the_envmap_rotation_convention(rotation):
    """Texels bright toward texture +X, L = max(0, t.x): in world this lobe points along
    Rz(rot)^T x (the Mapping-node convention of Environment.radiance_at). E along the lobe is
    integral cos^2 = 2 pi / 3, E against it 0; other normals against a brute-force integral."""
    tex = equirect_directions(64, 128)
    img = np.repeat(np.clip(tex[..., :1], 0, None), 3, axis=-1).astype(np.float32)
    env = Environment(img, rotation)
    axis = np.array([math.cos(rotation), -math.sin(rotation), 0.0])
    # the environment's own lookup agrees on where the lobe is
    assert env.radiance_at(axis)[0] == pytest.approx(1.0, abs=0.02)
    assert env.radiance_at(-axis)[0] == pytest.approx(0.0, abs=0.02)
    irr = Irradiance(env)
    E = irr(np.stack([axis, -axis]))[:, 0]
    np.testing.assert_allclose(E, [2 * math.pi / 3, 0.0], atol=0.01)
    # any normal: brute-force integral of radiance_at over a fine grid of world directions
    fine = equirect_directions(256, 512).reshape(-1, 3)
    w = np.broadcast_to(pixel_solid_angles(256, 512), (256, 512)).reshape(-1)
    L = env.radiance_at(fine)[:, 0]
    n = _unit(np.random.default_rng(2), 16)
    brute = (np.clip(n @ fine.T, 0, None) * (L * w)).sum(1)
    np.testing.assert_allclose(irr(n)[:, 0], brute, atol=0.01)


def test_zero_normals_give_no_light():
    irr = Irradiance(Environment.uniform(1.0))
    assert np.all(irr(np.zeros((3, 3))) == 0)


def test_area_lights_become_patches_of_radiance_P_over_pi_A_seen_from_the_origin():
    lights = [
        {"type": "AREA", "position": [0.0, -6.0, 0.0], "power_w": 500.0, "size_m": 1.0},
        {"type": "AREA", "position": [3.0, 0.0, 4.0], "power_w": 300.0, "size_m": 0.5},
    ]
    env = lights_environment({"type": "lights", "world_color": [0, 0, 0], "lights": lights}, 64)
    w = pixel_solid_angles(64, 128)[..., None]
    # distant-light power L * Omega = P / (pi A) * A / d^2 = P / (pi d^2), summed over the lights
    want = 500 / (math.pi * 36) + 300 / (math.pi * 25)
    np.testing.assert_allclose((env.radiance * w).sum(axis=(0, 1)), want, rtol=0.01)
    # irradiance on a normal facing the first light only: P / (pi d^2)
    E = Irradiance(env, 64)(np.array([[0.0, -1.0, 0.0]]))[0, 0]
    assert E == pytest.approx(500 / (math.pi * 36), rel=0.02)
    # the first light's power is centred on its direction (-Y)
    one = lights_environment({"type": "lights", "lights": lights[:1]}, 64)
    mass = (one.radiance[..., 0] * w[..., 0])[..., None] * equirect_directions(64, 128)
    centre = mass.sum(axis=(0, 1))
    np.testing.assert_allclose(centre / np.linalg.norm(centre), [0.0, -1.0, 0.0], atol=0.01)
