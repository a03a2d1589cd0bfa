"""EMA of the exported weights: the decay warm-up forgets the initial weights of short runs."""

from __future__ import annotations

import torch
from torch import nn

from near_blender.train.ema import EMA


def _jump(ema: EMA, model: nn.Module, updates: int) -> float:
    """EMA of a weight that jumps from 0 to 1 at the first step, after ``updates`` updates."""
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(updates):
        ema.update(model)
    return float(ema.model.weight.mean())


def _zero_linear() -> nn.Linear:
    m = nn.Linear(3, 2, bias=False)
    nn.init.zeros_(m.weight)
    return m


def test_warmup_forgets_the_initial_weights() -> None:
    m = _zero_linear()
    # constant decay 0.999: after 300 updates the average is still 74 % the initial (zero) weight
    assert abs(_jump(EMA(m, 0.999, warmup=False), m, 300) - (1 - 0.999**300)) < 1e-4
    m = _zero_linear()
    ema = EMA(m, 0.999)
    assert ema.current_decay() == 0.1
    assert _jump(ema, m, 300) > 0.999
    assert ema.updates == 300 and abs(ema.current_decay() - 301 / 310) < 1e-9
    ema.updates = 10**6
    assert ema.current_decay() == 0.999  # the configured decay once warm


def test_state_round_trip_and_old_states() -> None:
    m = _zero_linear()
    ema = EMA(m, 0.99)
    _jump(ema, m, 7)
    other = EMA(_zero_linear(), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 7 and other.warmup and other.current_decay() == ema.current_decay()
    assert torch.equal(other.model.weight, ema.model.weight)
    old = {"decay": 0.99, "model": ema.model.state_dict()}  # saved before the warm-up existed
    other.load_state_dict(old)
    assert not other.warmup and other.current_decay() == 0.99  # resumes as it was trained
