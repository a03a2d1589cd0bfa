"""Rotation plumbing (paper: rotation acts on the direction encoding only), through the real
conditioning and the tokenizer of the stage-2 stack."""

from __future__ import annotations

import math

import torch

from near_blender.render.conditioning import EnvConditioning
from near_blender.render.envmap import rotation_z
from tests.models_stage2._lambertian import environment
from tests.models_stage2._stage2_helpers import camera, tiny_stack


def _rot4(a: float) -> torch.Tensor:
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = torch.from_numpy(rotation_z(a))
    return m


def test_rotation_changes_only_directions_and_equals_the_inverse_camera_rotation() -> None:
    env = environment(32, 64, (0.4, -0.6, 0.5), (8.0, 6.0, 3.0), (0.5, 0.6, 0.9), (0.2, 0.15, 0.1))
    cond = EnvConditioning(env, height=32)
    vm, _ = camera((1.3, 0.6, 0.7), 32, 32)
    model = tiny_stack(seed=7)
    a = math.radians(70.0)

    base, rot = cond(vm), cond(vm, rotation_z=a)
    assert torch.equal(base.ldr, rot.ldr) and torch.equal(base.log, rot.log)  # bit-identical
    x0, xa = base.stacked(), rot.stacked()
    assert torch.equal(x0[:6], xa[:6]) and not torch.allclose(x0[6:], xa[6:], atol=1e-3)

    # Rotating the environment by a == keeping it and rotating the camera's view of the directions
    # by the inverse rotation (the camera orbits by a about Z: viewmat' = viewmat Rz(-a)).
    vm_orbit = (vm.double() @ _rot4(-a)).float()
    moved = cond(vm_orbit).stacked()
    torch.testing.assert_close(moved, xa, atol=1e-6, rtol=0)

    with torch.no_grad():
        t0 = model.encode_lighting(x0[None]).tokens
        ta = model.encode_lighting(xa[None]).tokens
        t_moved = model.encode_lighting(moved[None]).tokens
        t360 = model.encode_lighting(cond(vm, rotation_z=2 * math.pi).stacked()[None]).tokens
    assert (ta - t0).abs().max() > 1e-2  # the tokens see the rotation
    torch.testing.assert_close(t_moved, ta, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(t360, t0, atol=1e-4, rtol=1e-4)  # a full turn is no turn
