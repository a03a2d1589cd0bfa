"""Training is reproducible: the config's seed fixes the initial weights (issue 21, 7)."""

from __future__ import annotations

import torch

from near_blender.train.stage2 import Stage2Config, build_model


def _weights(seed: int, noise_before: int) -> dict[str, torch.Tensor]:
    torch.rand(noise_before)  # whatever ran before in the process must not matter
    norm = {"mean": [0.0] * 8, "std": [1.0] * 8}
    return build_model(Stage2Config(train={"seed": seed}), norm).state_dict()


def test_stage2_initial_weights_follow_the_training_seed():
    a, b, other = _weights(3, 1), _weights(3, 17), _weights(4, 1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # two fresh runs start bit-identical
    assert any(not torch.equal(a[k], other[k]) for k in a if a[k].is_floating_point())
