"""Flow-matching sanity: the tiny SLAT flow learns a toy distribution of sparse latents on CPU.

Toy data: every voxel's 8 channels are independent N(m_c, s²) with s = 0.3 and channel means of a
few s. Under TRELLIS' logit-normal(1, 1) time distribution the best possible loss is
E_t[s² / ((1 - t)² s² + t²)] = 0.225, while the untrained model (exact zero output) scores
E|eps - x0|² = 1 + E[m²] + s² = 1.57, so a > 5x drop needs a nearly optimal velocity field.
The test fails if the interpolation, the target or the loss were wrong (no drop), or if the
sampler integrated with the wrong sign or time convention (samples far from the data).
"""

from __future__ import annotations

import pytest
import torch

from near_blender.models.flow_matching import flow_matching_loss, sample_t
from near_blender.models.sampler import FlowEulerSampler
from near_blender.models.slat_flow import SLatFlowModel
from near_blender.sparse import SparseTensor

S = 0.3
_base = torch.tensor([-1.3, -1.1, -0.9, -0.65, 0.65, 0.9, 1.1, 1.3])
M = _base / _base.pow(2).mean().sqrt() * 2.3 * S  # rms(m) = 2.3 s


def toy_batch(g: torch.Generator, items: int) -> SparseTensor:
    coords = [torch.unique(torch.randint(24, 36, (64, 3), generator=g), dim=0) for _ in range(items)]
    return SparseTensor.from_list(coords, [M + S * torch.randn(c.shape[0], 8, generator=g) for c in coords])


@pytest.mark.slow
def test_tiny_flow_learns_toy_distribution(one_thread) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = SLatFlowModel(**SLatFlowModel.tiny_config(cond_channels=16))
    cond = torch.zeros(1, 1, 16)
    gv = torch.Generator().manual_seed(1)
    val = toy_batch(gv, 16)
    q = (torch.arange(16) + 0.5) / 16
    t_val = torch.sigmoid(1.0 + torch.erfinv(2 * q - 1) * 2**0.5)  # logit-normal(1, 1) quantiles
    eps_val = torch.randn(val.feats.shape, generator=gv)

    def val_loss() -> float:
        with torch.no_grad():
            return flow_matching_loss(model, val, cond, t=t_val, noise=eps_val).item()

    before = val_loss()
    steps = 400
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        # half logit-normal (TRELLIS), half uniform so that small t, which sets the fine detail of
        # the samples, is trained too
        t = torch.cat([sample_t(4, generator=g), sample_t(4, mode="uniform", generator=g)])
        loss = flow_matching_loss(model, toy_batch(g, 8), cond, t=t, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    after = val_loss()
    assert before > 1.4
    assert before / after > 5.0, (before, after)

    model.eval()
    gs = torch.Generator().manual_seed(3)
    x = toy_batch(gs, 32)
    noise = x.replace(torch.randn(x.feats.shape, generator=gs))
    out = FlowEulerSampler(steps=50, rescale_t=3.0, cfg_strength=0.0).sample(model, noise, cond)
    mean, std = out.feats.mean(0), out.feats.std(0)
    assert ((mean - M).abs() / M.abs()).max() < 0.10, mean
    assert ((std / S) - 1).abs().max() < 0.10, std
