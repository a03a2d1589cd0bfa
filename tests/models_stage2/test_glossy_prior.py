"""The "pbr" shading prior: the split-sum glossy term (prefiltered map x environment BRDF) added
to the diffuse one."""

from __future__ import annotations

import math

import numpy as np
import torch

from near_blender.render.conditioning import (
    EnvConditioning,
    diffuse_irradiance,
    env_brdf,
    glossy_albedo,
    prefiltered_radiance,
    radiance_basis,
)
from near_blender.render.envmap import Environment, equirect_directions
from tests.models_stage2._stage2_helpers import camera, sphere_slat, tiny_stack


def _basis(env: Environment):
    vm, _ = camera((0.0, -2.0, 0.3), 16, 16)
    return radiance_basis(EnvConditioning(env, 32)(vm.numpy()).stacked()[None])


def _unit(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(v / np.linalg.norm(v, axis=-1, keepdims=True)).float()


def test_basis_solid_angles_cover_the_sphere() -> None:
    dirs, power, omega = _basis(Environment(np.ones((32, 64, 3), np.float32), 0.0, "white"))
    assert dirs.shape == (1, 512, 3) and omega.shape == (1, 512)
    assert abs(float(omega.sum()) - 4 * math.pi) < 1e-4
    torch.testing.assert_close(power[0], omega[0, :, None].expand(-1, 3))  # radiance 1 everywhere


def test_prefiltered_constant_map_is_the_constant_for_any_roughness() -> None:
    dirs, power, omega = _basis(Environment(np.full((32, 64, 3), [0.5, 1.0, 2.0], np.float32), 0.0, "c"))
    r = _unit(np.random.default_rng(0).normal(size=(40, 3)))
    for rough in (0.0, 0.3, 1.0):
        got = prefiltered_radiance(r, torch.full((40,), rough), dirs[0], power[0], omega)
        torch.testing.assert_close(got, torch.tensor([[0.5, 1.0, 2.0]]).expand(40, 3), rtol=1e-4, atol=1e-5)


def test_sharp_lobe_reads_the_mirror_direction_and_rough_lobe_is_irradiance_over_pi() -> None:
    d = equirect_directions(32, 64)
    rad = 0.1 + 5.0 * np.exp(20.0 * (d @ np.array([0.0, 0.6, 0.8]) - 1.0))[..., None] * np.ones(3)
    dirs, power, omega = _basis(Environment(rad.astype(np.float32), 0.0, "lobe"))
    # the brightest block, seen along its own direction with the sharpest lobe: close to its radiance
    k = int((power[0, :, 0] / omega[0]).argmax())
    sharp = prefiltered_radiance(dirs[0, k : k + 1], torch.zeros(1), dirs[0], power[0], omega)
    block = power[0, k] / omega[0, k]
    assert float(sharp[0, 0]) > 0.5 * float(block[0])
    # roughness 1 is the cosine lobe (s = 1): the cosine-weighted mean radiance, E(r) / pi
    r = _unit(np.random.default_rng(1).normal(size=(30, 3)))
    rough = prefiltered_radiance(r, torch.ones(30), dirs[0], power[0], omega)
    torch.testing.assert_close(
        rough, diffuse_irradiance(r, dirs[0], power[0]) / math.pi, rtol=0.05, atol=0.01
    )


def test_env_brdf_matches_the_fit_at_its_ends() -> None:
    """Hand values of Karis' fit: F(F0 = 0.04) ~ 0.046 head-on for a mirror, ~ 1 at grazing."""
    a, b = env_brdf(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 1e-4, 1.0]))
    a004 = 2.0**-9.28 + 0.0425
    assert abs(float(a[0]) - (1.04 - 1.04 * a004)) < 1e-5 and abs(float(b[0]) - (1.04 * a004 - 0.04)) < 1e-5
    assert abs(float(0.04 * a[0] + b[0]) - 0.0456) < 1e-3
    assert float(0.04 * a[1] + b[1]) > 0.95  # grazing: everything reflects
    # rough, head-on: a004 = min(0, .) * 0 + 0.015 -> A = 0.452, B = 0.0004
    assert (
        abs(float(a[2]) - (0.468 - 1.04 * 0.015)) < 1e-5 and abs(float(b[2]) - (1.04 * 0.015 - 0.018)) < 1e-5
    )


def test_glossy_albedo_keeps_all_energy_of_a_white_metal_and_adds_to_single_scattering() -> None:
    rough, nv = torch.tensor([0.0, 0.5, 1.0, 1.0]), torch.tensor([1.0, 0.7, 1.0, 0.2])
    white = glossy_albedo(torch.ones(4, 3), rough, nv)
    torch.testing.assert_close(white, torch.ones(4, 3))  # furnace: F0 = 1 reflects everything
    f0 = torch.tensor([[0.04, 0.04, 0.04], [0.9, 0.5, 0.1], [0.04, 0.5, 0.9], [0.5, 0.5, 0.5]])
    a, b = env_brdf(rough, nv)
    single = f0 * a[:, None] + b[:, None]
    got = glossy_albedo(f0, rough, nv)
    assert torch.all(got >= single) and torch.all(got <= 1.0)
    # rough head-on F0 = 0.5: single 0.5 * 0.4524 + 0.0 (B = -0.0024), E_ms = 0.55, F_avg = 0.5238
    e_ms, f_avg = 1 - (a[2] + b[2]), 0.5 + 0.5 / 21
    s2 = 0.5 * a[2] + b[2]
    assert abs(float(got[2, 1]) - float(s2 + e_ms * f_avg * s2 / (1 - f_avg * e_ms))) < 1e-6
    assert float(got[2, 1]) > 1.3 * float(single[2, 1])  # multiple scattering matters when rough


def test_pbr_prior_adds_shadowed_split_sum_under_a_white_furnace() -> None:
    """Constant radiance L: the glossy term is shadow * L * albedo(F0) exactly, on top of the
    diffuse prior's output (same weights)."""
    glossy = tiny_stack(3, neural_basis={"shading_prior": "pbr"})
    diffuse = tiny_stack(3, neural_basis={"shading_prior": "diffuse"})
    L = np.array([0.5, 1.0, 2.0], np.float32)
    env = Environment(np.tile(L, (32, 64, 1)), 0.0, "const")
    vm, _ = camera((1.1, 0.9, 0.8), 24, 24)
    cond = EnvConditioning(env, 32)(vm.numpy()).stacked()[None]
    with torch.no_grad():
        asset, light = glossy.encode_asset(sphere_slat(0.2)), glossy.encode_lighting(cond)
        g = glossy.gaussians(asset, light, vm[None])
        got = glossy.radiance(g, light, vm[None]) - diffuse.radiance(
            g, diffuse.encode_lighting(cond), vm[None]
        )
    R, t = vm[:3, :3], vm[:3, 3]
    n = torch.nn.functional.normalize(g.normals @ R.T, dim=-1)
    v = -torch.nn.functional.normalize(g.means @ R.T + t, dim=-1)
    f0 = 0.04 * (1 - g.metallic[:, None]) + g.base_color * g.metallic[:, None]
    want = g.shadow[:, None] * torch.from_numpy(L)[None] * glossy_albedo(f0, g.roughness, (n * v).sum(-1))
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-4)
    assert float(want.amin()) > 0.0


def test_dielectric_prior_ignores_metallic_for_both_terms() -> None:
    """The prior "pbr_dielectric" = the diffuse term of "diffuse_all" + the glossy term with F0 = 0.04 for
    every Gaussian, whatever its predicted metallic (same weights, white furnace)."""
    priors = ("pbr_dielectric", "diffuse_all", "pbr")
    stacks = {p: tiny_stack(3, neural_basis={"shading_prior": p}) for p in priors}
    L = np.array([0.5, 1.0, 2.0], np.float32)
    env = Environment(np.tile(L, (32, 64, 1)), 0.0, "const")
    vm, _ = camera((1.1, 0.9, 0.8), 24, 24)
    cond = EnvConditioning(env, 32)(vm.numpy()).stacked()[None]
    with torch.no_grad():
        model = stacks["pbr_dielectric"]
        asset = model.encode_asset(sphere_slat(0.2))
        g = model.gaussians(asset, model.encode_lighting(cond), vm[None])
        out = {p: m.radiance(g, m.encode_lighting(cond), vm[None]) for p, m in stacks.items()}
    R, t = vm[:3, :3], vm[:3, 3]
    n = torch.nn.functional.normalize(g.normals @ R.T, dim=-1)
    v = -torch.nn.functional.normalize(g.means @ R.T + t, dim=-1)
    f0 = torch.full_like(g.base_color, 0.04)
    want = g.shadow[:, None] * torch.from_numpy(L)[None] * glossy_albedo(f0, g.roughness, (n * v).sum(-1))
    torch.testing.assert_close(out["pbr_dielectric"] - out["diffuse_all"], want, rtol=2e-3, atol=1e-4)
    metal = g.metallic > 0.3  # the random heads call some Gaussians metallic: "pbr" shades them otherwise
    assert int(metal.sum()) > 0
    assert float((out["pbr"] - out["pbr_dielectric"])[metal].abs().amax()) > 0.05
