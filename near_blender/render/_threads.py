"""Thread control for CPU torch code in the render package (private).

On a shared or busy CPU (CI runners, Blender's own threads, other jobs), torch's per-op OpenMP
teams stall whenever one of their threads is descheduled: a chain of small and medium ops was
measured 10-50x slower with 2 intra-op threads than with 1 on a loaded 2-core machine. The render
code therefore runs its op chains on one intra-op thread and gets parallelism, where it pays, from
worker threads that share work dynamically (see :mod:`._composite`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

_lock = threading.Lock()
_depth = 0
_saved = 1


def available_threads() -> int:
    """The intra-op thread count the user configured (also while :func:`single_threaded` runs)."""
    with _lock:
        return _saved if _depth else torch.get_num_threads()


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread; the user's setting is restored when the
    last of any concurrent (e.g. viewport + F12) users leaves."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            if _saved != 1:
                torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved != 1:
                torch.set_num_threads(_saved)


class _SerialFn(torch.autograd.Function):
    """Runs ``fn`` and its backward on one intra-op thread (local graph, replayed by backward)."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:  # type: ignore[override]
        needs = ctx.needs_input_grad[1:]
        with single_threaded(), torch.enable_grad() if any(needs) else torch.no_grad():
            leaves = [x.detach().requires_grad_(n) for x, n in zip(inputs, needs)]
            out = fn(*leaves)
        if any(needs):
            ctx.graph = (leaves, out)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        leaves, out = ctx.graph
        wanted = [x for x in leaves if x.requires_grad]
        with single_threaded():
            got = iter(torch.autograd.grad(out, wanted, g, allow_unused=True, retain_graph=True))
        grads = [next(got) if x.requires_grad else None for x in leaves]
        return (
            None,
            *[torch.zeros_like(x) if gr is None and x.requires_grad else gr for x, gr in zip(leaves, grads)],
        )


def serial(fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` with forward and backward on one intra-op thread (CPU); plain call elsewhere."""
    if not inputs or inputs[0].device.type != "cpu" or available_threads() == 1:
        return fn(*inputs)
    return _SerialFn.apply(fn, *inputs)
