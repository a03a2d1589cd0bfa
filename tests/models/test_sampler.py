"""Euler flow sampler: time warp, sign convention, guidance interval, progress and cancellation."""

from __future__ import annotations

import pytest
import torch

from near_blender.models.flow_matching import interpolate
from near_blender.models.sampler import FlowEulerSampler, denormalize, time_steps
from near_blender.sparse import SparseTensor
from near_blender.utils.progress import Cancelled

from ._helpers import sparse_input


def test_time_warp() -> None:
    pairs = time_steps(2, rescale_t=3.0)
    assert pairs == [(1.0, 0.75), (0.75, 0.0)]  # 3 * 0.5 / (1 + 2 * 0.5) = 0.75
    assert time_steps(4, 1.0)[1] == (0.75, 0.5)


def test_exact_velocity_field_lands_on_the_data_point() -> None:
    """For data = the constant c, v*(x, t) = (x - c) / t; Euler steps along straight paths hit c."""
    c = torch.tensor([1.5, -2.0, 0.25, 3.0, -1.0, 0.0, 0.5, 2.0])
    seen_t = []

    def model(x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        seen_t.append(t.clone())
        tf = (t / 1000.0).to(x.dtype)[x.batch_index][:, None]
        return x.replace((x.feats - c) / tf)

    noise = sparse_input(seed=1)
    out = FlowEulerSampler(steps=7, rescale_t=3.0, cfg_strength=0.0).sample(
        model, noise, torch.zeros(1, 1, 4)
    )
    torch.testing.assert_close(out.feats, c.expand_as(out.feats), atol=1e-5, rtol=1e-5)
    assert seen_t[0].tolist() == [1000.0, 1000.0] and len(seen_t) == 7
    # interpolation convention: x_t = (1 - t) x0 + t eps (sigma_min = 0), v = eps - x0
    x_t, v = interpolate(torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([0.25]), sigma_min=0.0)
    assert x_t.item() == pytest.approx(1.25) and v.item() == pytest.approx(-3.0)


def test_guidance_only_inside_the_interval() -> None:
    calls: list[tuple[float, float]] = []

    def model(x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        calls.append((float(t[0]) / 1000, float(cond.sum())))
        return x.replace(torch.full_like(x.feats, float(cond.flatten()[0])))

    x = sparse_input(seed=2, batch=1)
    cond = torch.full((1, 2, 4), 2.0)
    s = FlowEulerSampler(steps=4, rescale_t=1.0, cfg_strength=3.0, cfg_interval=(0.5, 1.0))
    out = s.sample(model, x, cond)
    uncond_calls = [c for c in calls if c[1] == 0.0]
    assert [round(c[0], 3) for c in uncond_calls] == [1.0, 0.75, 0.5]  # t = 0.25 is outside
    # v = (1 + 3) * 2 - 3 * 0 = 8 for 3 steps of 0.25, then v = 2 for the last
    torch.testing.assert_close(out.feats, x.feats - 0.75 * 8 - 0.25 * 2)


def test_progress_and_cancel() -> None:
    def model(x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        return x.replace(torch.zeros_like(x.feats))

    seen: list[float] = []
    s = FlowEulerSampler(steps=5, cfg_strength=0.0)
    s.sample(model, sparse_input(), torch.zeros(1, 1, 2), progress=lambda f, m: seen.append(f))
    assert seen == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    n = {"calls": 0}

    def cancel() -> bool:
        n["calls"] += 1
        return n["calls"] > 3

    with pytest.raises(Cancelled):
        s.sample(model, sparse_input(), torch.zeros(1, 1, 2), cancel=cancel)


def test_sampler_spec_and_normalization() -> None:
    spec = {
        "name": "FlowEulerGuidanceIntervalSampler",
        "args": {"sigma_min": 1e-5},
        "params": {"steps": 12, "cfg_strength": 5.0, "cfg_interval": [0.4, 0.9], "rescale_t": 2.0},
    }
    s = FlowEulerSampler.from_spec(spec)
    assert (s.steps, s.cfg_strength, s.cfg_interval, s.rescale_t) == (12, 5.0, (0.4, 0.9), 2.0)
    assert FlowEulerSampler.from_spec(s.to_spec()) == FlowEulerSampler.from_spec(spec)
    x = sparse_input(channels=2)
    norm = {"mean": [1.0, -1.0], "std": [2.0, 0.5]}
    d = denormalize(x, norm)
    torch.testing.assert_close(d.feats, x.feats * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0]))
