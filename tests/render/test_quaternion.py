"""Quaternion maths of :mod:`near_blender.render.quaternion`: hand-checked matrices for both
behaviours of ``quat_to_rotmat`` (unit input as is; ``normalize=True`` for any length)."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender.render.quaternion import quat_multiply, quat_to_rotmat, rotation_matrix_to_quat

H = math.sqrt(0.5)
RX90 = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
RY90 = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
RZ90 = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(("q", "R"), [((H, H, 0, 0), RX90), ((H, 0, H, 0), RY90), ((H, 0, 0, H), RZ90)])
def test_ninety_degree_rotations(q: tuple, R: list, normalize: bool) -> None:
    got = quat_to_rotmat(torch.tensor(q, dtype=torch.float64), normalize=normalize)
    torch.testing.assert_close(got, torch.tensor(R, dtype=torch.float64), atol=1e-12, rtol=0)


def test_non_unit_quaternions_keep_the_two_behaviours() -> None:
    q = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    # as is (the Gaussian head's contract: unit input), worked out by hand from the formula
    as_is = torch.tensor([[[1, 0, 0], [0, -1, -2], [0, 2, -1]], [[-7, 0, 0], [0, -7, 0], [0, 0, 1]]])
    assert torch.equal(quat_to_rotmat(q), as_is.double())
    # normalized (the rasterizer's): 90 degrees about +X, 180 degrees about +Z
    half_turn = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]
    torch.testing.assert_close(quat_to_rotmat(q, normalize=True), torch.tensor([RX90, half_turn]).double())


def test_rotation_of_a_vector_matches_the_quaternion_sandwich() -> None:
    q = torch.nn.functional.normalize(
        torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    v = torch.randn(64, 3, dtype=torch.float64)
    conj = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    vq = torch.cat([torch.zeros(64, 1, dtype=torch.float64), v], -1)
    want = quat_multiply(quat_multiply(q, vq), conj)[:, 1:]
    torch.testing.assert_close((quat_to_rotmat(q) @ v[:, :, None])[..., 0], want)
    for R in quat_to_rotmat(q[:8]):
        back = rotation_matrix_to_quat(R)
        torch.testing.assert_close(quat_to_rotmat(back), R)
