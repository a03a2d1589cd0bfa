"""The torch backend of :func:`near_blender.render.rasterize` (private).

One autograd Function wraps the whole pipeline (projection -> binning -> compositing):

* forward projects the Gaussians with a *local* autograd graph (only when gradients are needed),
  then composites without autograd (:mod:`._composite`);
* backward runs the compositing backward (replaying the forward's schedule) and pulls its
  gradients through the saved projection graph with ``torch.autograd.grad``.

Everything runs with one intra-op thread: parallelism comes from the compositing's worker
threads, which share work dynamically. Per-op OpenMP teams stall whenever another process holds a
core (measured 10-30x slower on a busy 2-core machine), and a desktop app (Blender) is exactly
such a busy machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._binning import Grid
from ._composite import CompositeConfig, composite_backward, composite_forward, make_plan
from ._projection import project_gaussians
from ._threads import available_threads, single_threaded


@dataclass(frozen=True)
class _Options:
    width: int
    height: int
    near_plane: float
    far_plane: float
    eps2d: float
    antialiased: bool
    ortho: bool
    cfg: CompositeConfig
    threads: int


def _finish(out: Tensor, backgrounds: Tensor | None, D: int) -> tuple[Tensor, Tensor, Tensor]:
    """[C, H, W, D + 2] (features | depth sum | alpha) -> (features over background, alpha, depth)."""
    color, dsum, alpha = out[..., :D], out[..., D : D + 1], out[..., D + 1 :]
    if backgrounds is not None:
        color = color + (1.0 - alpha) * backgrounds[:, None, None, :]
    return color, alpha, dsum / alpha.clamp_min(1e-10)


class _RasterizeFn(torch.autograd.Function):
    """Projection -> compositing -> background/depth normalization, with a hand-driven backward:
    the projection and the finishing step keep local autograd graphs, the compositing has its own
    backward; everything runs on one intra-op thread."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        opts: _Options,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        features: Tensor,
        viewmats: Tensor,
        Ks: Tensor,
        backgrounds: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        inputs = (means, quats, scales, opacities, features, viewmats, Ks)
        needs = ctx.needs_input_grad[1:8]
        grad = any(ctx.needs_input_grad)
        with torch.enable_grad() if any(needs) else torch.no_grad():
            leaves = [x.detach().requires_grad_(n) for x, n in zip(inputs, needs)]
            proj = project_gaussians(
                *leaves[:4], leaves[5], leaves[6], opts.width, opts.height, opts.near_plane,
                opts.far_plane, eps2d=opts.eps2d, antialiased=opts.antialiased, ortho=opts.ortho,
            )  # fmt: skip
            f = leaves[4]
            if f.dim() == 2:
                f = f.index_select(0, proj.gid)
            else:
                f = f.reshape(-1, f.shape[-1]).index_select(0, proj.cam * f.shape[1] + proj.gid)
            ones = torch.ones_like(proj.depths)[:, None]
            fe = torch.cat([f, proj.depths[:, None], ones], 1)  # features | depth | 1 (-> alpha)
        grid = Grid(opts.width, opts.height, viewmats.shape[0], opts.cfg.block)
        plan = make_plan(
            proj.means2d, proj.conics, proj.opacities, proj.depths, proj.cam, proj.radii, grid, opts.cfg,
            opts.threads,
        )  # fmt: skip
        out = composite_forward(fe.detach(), plan)
        with torch.enable_grad() if grad else torch.no_grad():
            out_leaf = out.requires_grad_(grad)
            bg = backgrounds
            if bg is not None:
                bg = bg.detach().requires_grad_(ctx.needs_input_grad[8])
            finished = _finish(out_leaf, bg, features.shape[-1])
        if grad:
            ctx.plan = plan
            ctx.graph = (leaves, [proj.means2d, proj.conics, proj.opacities, fe], out_leaf, bg, finished)
        return tuple(t.detach() for t in finished)  # type: ignore[return-value]

    @staticmethod
    def backward(ctx, *g_finished: Tensor):  # type: ignore[override]
        leaves, projected, out, bg, finished = ctx.graph
        with single_threaded():
            # keep the local graphs: the outer graph may be walked again (retain_graph / gradcheck);
            # they are freed with this node
            wanted = [out] + ([bg] if bg is not None and bg.requires_grad else [])
            got = torch.autograd.grad(finished, wanted, g_finished, allow_unused=True, retain_graph=True)
            g_out = got[0] if got[0] is not None else torch.zeros_like(out)
            g_bg = got[1] if len(got) > 1 else None
            grads = composite_backward(
                projected[2].detach(), projected[3].detach(), out.detach(), g_out, ctx.plan
            )
            want = [x for x in leaves if x.requires_grad]
            pairs = [(t, g) for t, g in zip(projected, grads) if t.requires_grad]
            res: tuple = tuple(None for _ in want)
            if pairs and want:
                outs, gs = [t for t, _ in pairs], [g for _, g in pairs]
                res = torch.autograd.grad(outs, want, gs, allow_unused=True, retain_graph=True)
        it = iter(res)
        result = [next(it) if x.requires_grad else None for x in leaves]
        result = [torch.zeros_like(x) if g is None and x.requires_grad else g for x, g in zip(leaves, result)]
        return (None, *result, g_bg)


def rasterize_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    backgrounds: Tensor | None,
    mode: str,
    camera_model: str,
    eps2d: float,
    config: CompositeConfig | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs already validated; returns (features, alphas, expected depths)."""
    opts = _Options(
        width, height, near_plane, far_plane, eps2d, mode == "antialiased", camera_model == "ortho",
        config or CompositeConfig(), available_threads(),
    )  # fmt: skip
    with single_threaded():
        return _RasterizeFn.apply(opts, means, quats, scales, opacities, features, viewmats, Ks, backgrounds)
