"""Thread control for CPU torch code in the render package (private).

On a shared or busy CPU (CI runners, Blender's own threads, other jobs), torch's per-op OpenMP
teams stall whenever one of their threads is descheduled: a chain of small and medium ops was
measured 10-50x slower with 2 intra-op threads than with 1 on a loaded 2-core machine. The render
code therefore runs its op chains on one intra-op thread and gets parallelism, where it pays, from
worker threads that share work dynamically (see :mod:`._composite`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the enclosed block (restored afterwards)."""
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _SerialFn(torch.autograd.Function):
    """Runs ``fn`` and its backward on one intra-op thread (local graph, replayed by backward)."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:  # type: ignore[override]
        needs = ctx.needs_input_grad[1:]
        with intra_op_threads(1), torch.enable_grad() if any(needs) else torch.no_grad():
            leaves = [x.detach().requires_grad_(n) for x, n in zip(inputs, needs)]
            out = fn(*leaves)
        if any(needs):
            ctx.graph = (leaves, out)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        leaves, out = ctx.graph
        wanted = [x for x in leaves if x.requires_grad]
        with intra_op_threads(1):
            got = iter(torch.autograd.grad(out, wanted, g, allow_unused=True, retain_graph=True))
        grads = [next(got) if x.requires_grad else None for x in leaves]
        return (
            None,
            *[torch.zeros_like(x) if gr is None and x.requires_grad else gr for x, gr in zip(leaves, grads)],
        )


def serial(fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` with forward and backward on one intra-op thread (CPU); plain call elsewhere."""
    if not inputs or inputs[0].device.type != "cpu" or torch.get_num_threads() == 1:
        return fn(*inputs)
    return _SerialFn.apply(fn, *inputs)
