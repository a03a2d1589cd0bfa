"""The diffuse shading prior: irradiance from the tokenizer input, the prior's radiance, and the
fine-tuning start (``init_from``) that adds it to a trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from near_blender import NearError
from near_blender.eval.irradiance import Irradiance
from near_blender.pipeline import NearPipeline
from near_blender.render.conditioning import EnvConditioning, diffuse_irradiance, radiance_basis
from near_blender.render.envmap import Environment, equirect_directions
from near_blender.train.stage2 import init_weights, read_init_source
from tests.models_stage2._stage2_helpers import camera, sphere_slat, tiny_stack


def _smooth_env(rotation_z: float = 0.0) -> Environment:
    """A sky gradient plus a broad warm lobe (no tiny sun, so 16 rows integrate it to < 1 %)."""
    d = equirect_directions(64, 128)
    lobe = np.exp(8.0 * (d @ np.array([0.6, -0.3, 0.74]) - 1.0))[..., None]
    sky = 0.2 + 0.3 * np.clip(d[..., 2:3], 0, None)
    rad = sky * np.array([0.6, 0.8, 1.0]) + 6.0 * lobe * np.array([1.0, 0.7, 0.4])
    return Environment(rad.astype(np.float32), rotation_z, "smooth")


def _random_normals(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("rotation_z", [0.0, 1.1])
def test_irradiance_from_conditioning_matches_the_eval_integral(rotation_z: float) -> None:
    env = _smooth_env(rotation_z)
    vm, _ = camera((1.3, -0.8, 0.6), 32, 32)
    cond = EnvConditioning(env, 32)(vm.numpy()).stacked()[None]
    dirs, power, _ = radiance_basis(cond)
    assert dirs.shape == (1, 512, 3) and power.shape == (1, 512, 3)  # 32 rows -> 16 x 32 blocks
    n_world = _random_normals(200)
    R = vm[:3, :3].double().numpy()
    got = diffuse_irradiance(torch.from_numpy(n_world @ R.T).float(), dirs[0], power[0]).numpy()
    want = Irradiance(env)(n_world)
    np.testing.assert_allclose(got, want, rtol=0.02, atol=0.01 * want.max())
    # the total power is kept exactly by the block sums (2 pi sr of sky weighted by radiance)
    full = EnvConditioning(env, 32).radiance  # [32, 64, 3] the map the conditioning holds
    theta = np.linspace(0, math.pi, 33)
    omega = (2 * math.pi / 64) * (np.cos(theta[:-1]) - np.cos(theta[1:]))
    np.testing.assert_allclose(power[0].sum(0).numpy(), (full * omega[:, None, None]).sum((0, 1)), rtol=1e-4)


def test_constant_map_gives_pi_times_radiance() -> None:
    env = Environment(np.full((32, 64, 3), [0.5, 1.0, 2.0], np.float32), 0.0, "const")
    vm, _ = camera((0.0, -2.0, 0.3), 16, 16)
    dirs, power, _ = radiance_basis(EnvConditioning(env, 32)(vm.numpy()).stacked()[None])
    E = diffuse_irradiance(torch.from_numpy(_random_normals(50, 1)).float(), dirs[0], power[0])
    np.testing.assert_allclose(E.numpy(), np.tile(math.pi * np.array([0.5, 1.0, 2.0]), (50, 1)), rtol=0.01)


def test_radiance_basis_rejects_a_wrong_shape() -> None:
    with pytest.raises(NearError, match=r"\[B, 9, H, W\]"):
        radiance_basis(torch.zeros(1, 6, 32, 64))


def _prior_stack(seed: int = 0, prior: str = "diffuse"):
    model = tiny_stack(seed, neural_basis={"shading_prior": prior})
    last = [m for m in model.neural_basis.mlp if isinstance(m, torch.nn.Linear)][-1]
    return model, last


@pytest.mark.parametrize("prior", ["diffuse", "diffuse_all"])
def test_prior_radiance_is_the_lambertian_term_in_world_space(prior: str) -> None:
    """With the MLP's RGB outputs zeroed, radiance = base (1 - metallic) shadow E(n_world) / pi
    ("diffuse_all": base shadow E / pi, metals too), E from the eval's numpy integral in the world
    frame (the model works in camera space)."""
    model, last = _prior_stack(prior=prior)
    with torch.no_grad():
        last.weight[:3].zero_()
        last.bias[:3].zero_()
    env = _smooth_env(0.7)
    vm, K = camera((1.1, 0.9, 0.8), 32, 32)
    cond = EnvConditioning(env, 32)(vm.numpy()).stacked()[None]
    with torch.no_grad():
        asset, light = model.encode_asset(sphere_slat(0.2)), model.encode_lighting(cond)
        g = model.gaussians(asset, light, vm[None])
        rad = model.radiance(g, light, vm[None]).double().numpy()
        out = model.decode_view(asset, light, vm[None], K[None], 32, 32)
    E = Irradiance(env)(g.normals.double().numpy())
    metal = g.metallic if prior == "diffuse" else torch.zeros_like(g.metallic)
    assert float(g.metallic.mean()) > 0.1  # the factor matters: the random heads make half-metals
    want = g.base_color.double().numpy() * ((1 - metal) * g.shadow).double().numpy()[:, None] * E / math.pi
    np.testing.assert_allclose(rad, want, rtol=0.03, atol=0.01 * want.max())
    assert want.max() > 0.05 and float(out["hdr"].amax()) > 0.01  # something lit was rendered


def test_prior_adds_the_network_output_and_needs_the_lighting() -> None:
    model, _ = _prior_stack(1)
    plain = tiny_stack(1)  # same seed: the same weights without the prior
    vm, K = camera((1.1, 0.9, 0.8), 24, 24)
    cond = EnvConditioning(_smooth_env(), 32)(vm.numpy()).stacked()[None]
    with torch.no_grad():
        asset, light = model.encode_asset(sphere_slat(0.2)), model.encode_lighting(cond)
        g = model.gaussians(asset, light, vm[None])
        with_prior = model.radiance(g, light, vm[None])
        mlp_only = plain.radiance(g, plain.encode_lighting(cond), vm[None])
        with pytest.raises(NearError, match="needs the lighting"):
            model.render_gaussians(g, vm[None], K[None], 24, 24)
    assert plain.shading_prior == "none" and light.irradiance is not None
    diff = with_prior - mlp_only
    assert torch.all(diff >= -1e-6) and float(diff.amax()) > 0.01  # the diffuse term, added


def test_init_from_copies_weights_and_zeroes_the_residual(tmp_path) -> None:
    src = tiny_stack(2)
    NearPipeline(models=src.stage2_models(), args={"stage2": {"slat_normalization": {}}}).save_pretrained(
        tmp_path / "model"
    )
    source = read_init_source(str(tmp_path / "model"))
    model, last = _prior_stack(5)
    init_weights(model, source, "test")
    for k, v in src.state_dict().items():
        got = model.state_dict()[k]
        if k.endswith(f"mlp.{len(model.neural_basis.mlp) - 1}.weight"):
            assert torch.all(got[:3] == 0) and torch.equal(got[3:], v[3:])
        elif k.endswith(f"mlp.{len(model.neural_basis.mlp) - 1}.bias"):
            assert torch.all(got[:3] == 0) and torch.equal(got[3:], v[3:])
        else:
            assert torch.equal(got, v), k
    # a source of another size fails naming the keys, a folder without an export names the fix
    with pytest.raises(NearError, match="mis-shaped"):
        init_weights(tiny_stack(0, neural_basis={"hidden_dim": 16}), source, "t")
    with pytest.raises(NearError, match="not a stage-2 export"):
        read_init_source(str(tmp_path / "nothing"))


def test_init_from_diffuse_to_diffuse_all_keeps_the_residual(tmp_path) -> None:
    """Switching between the two diffuse priors changes only the metals' diffuse term, so the
    radiance MLP's learned residual is kept (a prior added to a model without one zeroes it)."""
    src, _ = _prior_stack(2)
    args = {"stage2": {"slat_normalization": {}}}
    NearPipeline(models=src.stage2_models(), args=args).save_pretrained(tmp_path / "model")
    model, last = _prior_stack(5, prior="diffuse_all")
    init_weights(model, read_init_source(str(tmp_path / "model")), "test")
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert float(last.weight[:3].abs().amax()) > 0  # not zeroed
