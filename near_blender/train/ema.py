"""Exponential moving average of model weights (the weights that get exported).

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
``num_updates`` rule): without it a run of about ``1 / (1 - decay)`` steps exports a blend that is
still largely the *initial* weights (0.999 ** 1500 = 22 % after the 1500 steps of the default
stage 1), which wipes out what a fine-tune adds to zero-initialised weights, e.g. the
homogenizer's ``Z_s`` input columns (``tests/models/test_homogenizer_reads_zs.py``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = d * shadow + (1 - d) * param`` after every optimizer step, ``d`` = :meth:`current_decay`.

    Buffers are copied as they are. ``state_dict``/``load_state_dict`` make resumes exact; a state
    saved before the warm-up existed (no ``updates``) resumes with the constant decay it had.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses: ``decay``, ramped up over the first updates."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        src = dict(model.named_parameters())
        for name, p in self.model.named_parameters():
            p.lerp_(src[name].detach(), weight)
        srcb = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(srcb[name])
        self.updates += 1

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "updates": self.updates,
            "model": self.model.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.warmup = bool(state.get("warmup", False)) and "updates" in state
        self.updates = int(state.get("updates", 0))
        self.model.load_state_dict(state["model"])
