"""Front-to-back alpha compositing of projected Gaussians, as a custom autograd Function (private).

Per pixel (centre ``p``), Gaussians in depth order with ``alpha = min(0.999, o exp(-power))``,
``power = 0.5 (a dx² + c dy²) + b dx dy``, ``dx = u - p_x``; those with ``alpha < 1/255`` are
skipped; the pixel stops *before* the first Gaussian that would bring its transmittance to
``<= 1e-4``. Outputs ``sum_k w_k f_k`` and ``sum_k w_k`` with ``w_k = alpha_k T_k``.

How it runs (pure torch, vectorized):

* blocks of ``S x S`` pixels (see :mod:`._binning`) are processed in groups; a group advances in
  rounds of ``K`` Gaussians per block; the exponent for all (Gaussian, pixel) pairs of a round is
  one matrix product ``coef [G*K, 6] @ basis [6, S*S]`` (a Gaussian's exponent is a quadratic
  polynomial in the pixel's block-local coordinates);
* transmittance is a ``cumprod`` along the round with the carried transmittance in front;
  pixels that reached the stop get transmittance 0 from then on, and blocks whose pixels are all
  done retire;
* memory is bounded by the round size (``chunk`` elements) and by depth slabs of at most
  ``pair_budget`` (Gaussian, block) pairs;
* backward recomputes each round (nothing per pair is stored) and uses the saved outputs for the
  "light from behind" term: ``dC/dalpha_k = T_k f_k - (sum_{j>k} w_j f_j) / (1 - alpha_k)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ._binning import Bins, Grid, bin_instances, depth_slabs, pair_counts

ALPHA_MAX = 0.999
T_STOP = 1e-4
_DUMMY_LOG_OPACITY = -1.0e4  # padding entries: exp(-1e4) == 0


@dataclass
class CompositeConfig:
    """Tuning knobs (results do not depend on them)."""

    block: int = 8  # pixels per block side; divides 16
    round_size: int = 32  # Gaussians per block per round (max)
    chunk: int = 1 << 18  # (Gaussian, pixel) evaluations per round (memory bound)
    pair_budget: int = 1 << 23  # (Gaussian, block) pairs per depth slab (memory bound)
    # Below this many (Gaussian, pixel) candidate evaluations run single-threaded: thread wake-ups
    # cost more than they save on small scenes (and a lot on a busy machine).
    serial_below: int = 1 << 21


@dataclass
class _Group:
    """Blocks composited together: their Gaussian lists padded to a multiple of the round size."""

    bid: Tensor  # [G] global block ids
    cx: Tensor  # [G] block centre x (pixels)
    cy: Tensor  # [G] block centre y
    count: Tensor  # [G] list lengths
    lists: Tensor  # [G, L] instance ids, padded with the dummy id M (L = rounds * K)
    K: int

    @property
    def rounds(self) -> int:
        return self.lists.shape[1] // self.K


@dataclass
class _Plan:
    grid: Grid
    cfg: CompositeConfig
    order: Tensor  # instances in front-to-back order
    slabs: list[tuple[int, int]]
    cam: Tensor
    radii: Tensor
    serial: bool = False
    cache: list[list[_Group]] = field(default_factory=list)


@contextlib.contextmanager
def _threads(serial: bool) -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread when ``serial`` (restored afterwards)."""
    n = torch.get_num_threads()
    if not serial or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _basis(S: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[6, S*S] monomials (1, u, v, u², uv, v²) of block-local pixel-centre coordinates."""
    c = torch.arange(S, dtype=dtype, device=device) + 0.5 - S / 2
    v, u = torch.meshgrid(c, c, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v])


def _coefficients(mx: Tensor, my: Tensor, a: Tensor, b: Tensor, c: Tensor, lno: Tensor) -> Tensor:
    """[..., 6] polynomial coefficients of the log-alpha in block-local pixel coordinates.

    ``ln alpha = lno - 0.5 a (mx-u)² - b (mx-u)(my-v) - 0.5 c (my-v)²`` expanded in (1,u,v,u²,uv,v²).
    """
    c1 = a * mx + b * my
    c2 = b * mx + c * my
    c0 = lno - 0.5 * (mx * c1 + my * c2)
    return torch.stack([c0, c1, c2, -0.5 * a, -b, -0.5 * c], -1)


def _coefficient_vjp(mx: Tensor, my: Tensor, coef: Tensor, par: Tensor, g: Tensor) -> Tensor:
    """Chain d/dcoef [G,K,6] to d/d(mx, my, a, b, c, ln o) [G,K,6] (mx, my block-local)."""
    a, b, c = par[..., 2], par[..., 3], par[..., 4]
    g0, g1, g2, g3, g4, g5 = g.unbind(-1)
    c1, c2 = coef[..., 1], coef[..., 2]
    d_mx = g1 * a + g2 * b - g0 * c1
    d_my = g1 * b + g2 * c - g0 * c2
    d_a = g1 * mx - 0.5 * (g0 * mx * mx + g3)
    d_b = g1 * my + g2 * mx - g0 * mx * my - g4
    d_c = g2 * my - 0.5 * (g0 * my * my + g5)
    return torch.stack([d_mx, d_my, d_a, d_b, d_c, g0], -1)


def _image_to_blocks(img: Tensor, grid: Grid) -> Tensor:
    """[C, H, W, D] -> [num_blocks, S*S, D] (zero padded)."""
    C, H, W, D = img.shape
    S = grid.block
    pad = img.new_zeros(C, grid.nby * S, grid.nbx * S, D)
    pad[:, :H, :W] = img
    x = pad.view(C, grid.nby, S, grid.nbx, S, D).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(grid.num_blocks, S * S, D)


def _blocks_to_image(blocks: Tensor, grid: Grid) -> Tensor:
    """[num_blocks, D, S*S] -> [C, H, W, D]."""
    S = grid.block
    D = blocks.shape[1]
    x = blocks.view(grid.cameras, grid.nby, grid.nbx, D, S, S).permute(0, 1, 4, 2, 5, 3)
    x = x.reshape(grid.cameras, grid.nby * S, grid.nbx * S, D)
    return x[:, : grid.height, : grid.width]


def _initial_transmittance(grid: Grid, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[num_blocks, S*S]: 1 on real pixels, 0 on the padding beyond the image border."""
    img = torch.ones(grid.cameras, grid.height, grid.width, 1, dtype=dtype, device=device)
    return _image_to_blocks(img, grid)[..., 0].contiguous()


def _alpha_threshold(dtype: torch.dtype) -> float:
    """Largest value below 1/255 in ``dtype``: ``F.threshold`` keeps x > it, i.e. x >= 1/255."""
    t = torch.tensor(1.0 / 255.0, dtype=dtype)
    return float(torch.nextafter(t, torch.tensor(0.0, dtype=dtype)))


def _round_up(x: int, m: int) -> int:
    return max(m, (x + m - 1) // m * m)


class _Sweep:
    """Shared forward/backward machinery for one rasterization call."""

    def __init__(self, means2d: Tensor, conics: Tensor, opac: Tensor, feats: Tensor, plan: _Plan):
        self.plan = plan
        self.grid = plan.grid
        dt, dev = means2d.dtype, means2d.device
        self.dtype, self.device = dt, dev
        # instance parameters with one trailing dummy row (the padding target)
        M = means2d.shape[0]
        self.M = M
        self.par = torch.zeros(M + 1, 6, dtype=dt, device=dev)  # mx, my, a, b, c, ln(o)
        self.par[:M, :2] = means2d
        self.par[:M, 2:5] = conics
        self.par[:M, 5] = torch.log(opac)
        self.par[M, 5] = _DUMMY_LOG_OPACITY
        self.opac = opac
        self.feats = torch.cat([feats, feats.new_zeros(1, feats.shape[1])], 0)
        self.basis = _basis(self.grid.block, dt, dev)  # [6, P]
        self.athr = _alpha_threshold(dt)

    def groups(self, k: int) -> list[_Group]:
        """The block groups of depth slab k (cached for the backward pass when there is one slab)."""
        plan = self.plan
        if k < len(plan.cache):
            return plan.cache[k]
        i0, i1 = plan.slabs[k]
        bins = bin_instances(
            plan.order[i0:i1], plan.cam, self.par[: self.M, :2], self.par[: self.M, 2:5],
            self.opac, plan.radii, self.grid,
        )  # fmt: skip
        groups = self._make_groups(bins)
        if len(plan.slabs) == 1:
            plan.cache.append(groups)
        return groups

    def _make_groups(self, bins: Bins) -> list[_Group]:
        cfg, grid, P = self.plan.cfg, self.grid, self.grid.pixels_per_block
        if bins.count.numel() == 0:
            return []
        cnt, order = torch.sort(bins.count, descending=True)
        cnt_l = cnt.tolist()
        out = []
        i, n = 0, len(cnt_l)
        while i < n:
            K = min(cfg.round_size, _round_up(cnt_l[i], 4))
            G = max(1, cfg.chunk // (K * P))
            sel = order[i : i + G]
            c = cnt[i : i + G]
            L = _round_up(cnt_l[i], K)
            st = bins.start.index_select(0, sel)
            pos = torch.arange(L, device=self.device)
            valid = pos[None, :] < c[:, None]
            idx = (st[:, None] + pos[None, :]).clamp_(max=max(bins.num_pairs - 1, 0))
            lists = bins.pair_inst.index_select(0, idx.view(-1)).view(-1, L)
            lists = torch.where(valid, lists, self.M)
            bid = bins.block_ids.index_select(0, sel)
            local = bid % grid.blocks_per_camera
            cx = (local % grid.nbx).to(self.dtype) * grid.block + grid.block / 2
            cy = torch.div(local, grid.nbx, rounding_mode="floor").to(self.dtype) * grid.block
            cy += grid.block / 2
            out.append(_Group(bid, cx, cy, c, lists, K))
            i += G
        return out

    def round(self, grp: _Group, live: Tensor, r: int, t_in: Tensor) -> dict[str, Tensor]:
        """Recompute one round for the blocks ``live`` (indices into the group)."""
        K = grp.K
        inst = grp.lists.index_select(0, live)[:, r * K : (r + 1) * K]  # [G, K]
        G = inst.shape[0]
        P = self.grid.pixels_per_block
        flat = inst.reshape(-1)
        p = self.par.index_select(0, flat).view(G, K, 6)
        mx = p[..., 0] - grp.cx.index_select(0, live)[:, None]
        my = p[..., 1] - grp.cy.index_select(0, live)[:, None]
        coef = _coefficients(mx, my, p[..., 2], p[..., 3], p[..., 4], p[..., 5])
        lna = (coef.view(G * K, 6) @ self.basis).view(G, K, P)
        alpha = F.threshold(torch.exp_(lna).clamp_max_(ALPHA_MAX), self.athr, 0.0)
        buf = torch.empty(G, K + 1, P, dtype=alpha.dtype, device=alpha.device)
        buf[:, 0] = t_in
        om = buf[:, 1:]
        torch.sub(1.0, alpha, out=om)
        U = F.threshold(torch.cumprod(buf, 1)[:, 1:], T_STOP, 0.0)  # masked T after each Gaussian
        fe = self.feats.index_select(0, flat).view(G, K, -1)
        return {"inst": inst, "mx": mx, "my": my, "p": p, "coef": coef, "alpha": alpha, "om": om,
                "U": U, "fe": fe}  # fmt: skip


def _live_blocks(grp: _Group, live: Tensor, t_g: Tensor, r: int) -> Tensor:
    keep = (grp.count.index_select(0, live) > r * grp.K) & (t_g.index_select(0, live).amax(1) > 0)
    return live[keep]


def _run_forward(sw: _Sweep) -> tuple[Tensor, Tensor]:
    grid = sw.grid
    nb, P = grid.num_blocks, grid.pixels_per_block
    Dc = sw.feats.shape[1]
    T = _initial_transmittance(grid, sw.dtype, sw.device)
    acc = torch.zeros(nb, Dc, P, dtype=sw.dtype, device=sw.device)
    for k in range(len(sw.plan.slabs)):
        for grp in sw.groups(k):
            t_g = T.index_select(0, grp.bid)
            acc_g = acc.index_select(0, grp.bid)
            live = torch.arange(grp.bid.shape[0], device=sw.device)
            for r in range(grp.rounds):
                live = _live_blocks(grp, live, t_g, r)
                if not live.numel():
                    break
                d = sw.round(grp, live, r, t_g.index_select(0, live))
                w = d["alpha"].div_(d["om"]).mul_(d["U"])  # alpha T_before on contributing entries
                acc_g.index_add_(0, live, torch.bmm(d["fe"].transpose(1, 2), w))
                t_g.index_copy_(0, live, d["U"][:, -1])
            T.index_copy_(0, grp.bid, t_g)
            acc.index_copy_(0, grp.bid, acc_g)
    return acc, T


def _run_backward(sw: _Sweep, g_blocks: Tensor, q_total: Tensor) -> tuple[Tensor, Tensor]:
    """g_blocks [nb, P, Dc]: upstream gradient per output channel; q_total [nb, P] = sum_c g_c out_c.

    Returns gradients w.r.t. the instance parameters [M, 6] (mx, my, a, b, c, ln o) and features.
    """
    grid = sw.grid
    P = grid.pixels_per_block
    g_t = g_blocks.transpose(1, 2).contiguous()  # [nb, Dc, P]
    T = _initial_transmittance(grid, sw.dtype, sw.device)
    Q = -q_total  # running (sum_{j<=k} w_j q_j) - Q_total per pixel
    g_par = torch.zeros_like(sw.par)
    g_feat = torch.zeros_like(sw.feats)
    for k in range(len(sw.plan.slabs)):
        for grp in sw.groups(k):
            t_g, q_g = T.index_select(0, grp.bid), Q.index_select(0, grp.bid)
            gbt = g_t.index_select(0, grp.bid)
            live = torch.arange(grp.bid.shape[0], device=sw.device)
            for r in range(grp.rounds):
                live = _live_blocks(grp, live, t_g, r)
                if not live.numel():
                    break
                d = sw.round(grp, live, r, t_g.index_select(0, live))
                alpha, om, U = d["alpha"], d["om"], d["U"]
                w = alpha / om * U
                q = torch.bmm(d["fe"], gbt.index_select(0, live))  # [G, K, P]: sum_c f_c g_c
                qi = torch.cumsum(w * q, 1).add_(q_g.index_select(0, live)[:, None, :])
                q_g.index_copy_(0, live, qi[:, -1])
                t_g.index_copy_(0, live, U[:, -1])
                # dL/dalpha_k = (U_k q_k + sum_{j<=k} w_j q_j - Q_total) / (1 - alpha_k), kept only on
                # contributing (U > 0) and unclamped (alpha < 0.999) entries; times alpha for ln-alpha
                ga = torch.addcmul(qi, U, q).div_(om)
                ga.mul_(F.threshold(alpha.neg(), -ALPHA_MAX, 0.0))  # * (-alpha) where unclamped
                ga.mul_(torch.clamp_max_(U * 1e12, 1.0))  # * [U > 0]
                G_, K_ = d["inst"].shape
                g_coef = (sw.basis @ ga.view(G_ * K_, P).t()).t().reshape(G_, K_, 6).neg_()
                g_fe = torch.bmm(gbt.index_select(0, live), w.transpose(1, 2)).transpose(1, 2)
                g_p = _coefficient_vjp(d["mx"], d["my"], d["coef"], d["p"], g_coef)
                flat = d["inst"].reshape(-1)
                g_par.index_add_(0, flat, g_p.view(-1, 6))
                g_feat.index_add_(0, flat, g_fe.reshape(-1, g_fe.shape[-1]))
            T.index_copy_(0, grp.bid, t_g)
            Q.index_copy_(0, grp.bid, q_g)
    return g_par[: sw.M], g_feat[: sw.M]


class _CompositeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opac: Tensor, feats: Tensor, plan: _Plan):  # type: ignore[override]
        with _threads(plan.serial):
            sw = _Sweep(means2d.detach(), conics.detach(), opac.detach(), feats.detach(), plan)
            acc, _ = _run_forward(sw)
            out = _blocks_to_image(acc, plan.grid)  # [C, H, W, Dc]
        ctx.plan = plan
        ctx.save_for_backward(means2d, conics, opac, feats, out)
        return out

    @staticmethod
    def backward(ctx, g_out: Tensor):  # type: ignore[override]
        means2d, conics, opac, feats, out = ctx.saved_tensors
        plan: _Plan = ctx.plan
        with _threads(plan.serial):
            sw = _Sweep(means2d.detach(), conics.detach(), opac.detach(), feats.detach(), plan)
            g_blocks = _image_to_blocks(g_out.contiguous(), plan.grid).contiguous()  # [nb, P, Dc]
            q_total = _image_to_blocks((g_out * out).sum(-1, keepdim=True), plan.grid)[..., 0]
            g_par, g_feat = _run_backward(sw, g_blocks, q_total)
        g_means = g_par[:, :2]
        g_conics = g_par[:, 2:5]
        g_opac = g_par[:, 5] / opac.detach()
        return g_means, g_conics, g_opac, g_feat, None


def composite(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    feats: Tensor,
    depths: Tensor,
    cam: Tensor,
    radii: Tensor,
    grid: Grid,
    cfg: CompositeConfig | None = None,
) -> Tensor:
    """Composite M projected instances into C images.

    Args:
        means2d [M, 2], conics [M, 3], opacities [M] (>= 1/255), feats [M, Dc]: per instance,
            differentiable.
        depths [M]: sort key (front to back); cam [M], radii [M, 2]: camera index and extents.
    Returns:
        [C, H, W, Dc]: ``sum_k w_k f_k`` per pixel (no background).
    """
    cfg = cfg or CompositeConfig()
    with torch.no_grad():
        # front to back; ties keep instance order (stable), like gsplat
        order = torch.sort(depths.detach(), stable=True).indices
        counts = pair_counts(
            means2d.detach().index_select(0, order),
            radii.index_select(0, order),
            opacities.detach().index_select(0, order),
            grid,
        )
        slabs = depth_slabs(counts, cfg.pair_budget)
        serial = int(counts.sum()) * grid.pixels_per_block < cfg.serial_below
    plan = _Plan(grid, cfg, order, slabs, cam, radii, serial)
    if not slabs:
        C, H, W = grid.cameras, grid.height, grid.width
        return feats.new_zeros(C, H, W, feats.shape[1]) + 0.0 * feats.sum()
    return _CompositeFn.apply(means2d, conics, opacities, feats, plan)
