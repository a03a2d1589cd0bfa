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


@dataclass
class _Plan:
    grid: Grid
    cfg: CompositeConfig
    order: Tensor  # instances in front-to-back order
    slabs: list[tuple[int, int]]
    cam: Tensor
    radii: Tensor
    bins: list[Bins] = field(default_factory=list)


def _basis(S: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[6, S*S] monomials (1, u, v, u², uv, v²) of block-local pixel-centre coordinates."""
    c = torch.arange(S, dtype=dtype, device=device) + 0.5 - S / 2
    v, u = torch.meshgrid(c, c, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v])


def _block_centres(block_ids: Tensor, grid: Grid, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    local = block_ids % grid.blocks_per_camera
    S = grid.block
    cx = (local % grid.nbx).to(dtype) * S + S / 2
    cy = (local // grid.nbx).to(dtype) * S + S / 2
    return cx, cy


def _coefficients(mx: Tensor, my: Tensor, a: Tensor, b: Tensor, c: Tensor, lno: Tensor) -> Tensor:
    """[..., 6] polynomial coefficients of the log-alpha in block-local pixel coordinates.

    ``ln alpha = lno - 0.5 a (mx-u)² - b (mx-u)(my-v) - 0.5 c (my-v)²`` expanded in (1,u,v,u²,uv,v²).
    """
    c1 = a * mx + b * my
    c2 = b * mx + c * my
    c0 = lno - 0.5 * (mx * c1 + my * c2)
    return torch.stack([c0, c1, c2, -0.5 * a, -b, -0.5 * c], -1)


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


class _Sweep:
    """Shared forward/backward machinery for one rasterization call."""

    def __init__(self, means2d: Tensor, conics: Tensor, opac: Tensor, feats: Tensor, plan: _Plan):
        self.plan = plan
        self.grid = plan.grid
        dt, dev = means2d.dtype, means2d.device
        self.dtype, self.device = dt, dev
        # instance parameters with one trailing dummy row (padding target)
        M = means2d.shape[0]
        self.M = M
        self.par = torch.zeros(M + 1, 6, dtype=dt, device=dev)  # mx, my, a, b, c, ln(o)
        self.par[:M, :2] = means2d
        self.par[:M, 2:5] = conics
        self.par[:M, 5] = torch.log(opac)
        self.par[M, 5] = _DUMMY_LOG_OPACITY
        self.feats = torch.cat([feats, feats.new_zeros(1, feats.shape[1])], 0)
        self.basis = _basis(self.grid.block, dt, dev)  # [6, P]
        self.athr = _alpha_threshold(dt)

    def bins(self, k: int) -> Bins:
        plan = self.plan
        if k < len(plan.bins):
            return plan.bins[k]
        i0, i1 = plan.slabs[k]
        b = bin_instances(
            plan.order[i0:i1], plan.cam, self.par[: self.M, :2], self.par[: self.M, 2:5],
            torch.exp(self.par[: self.M, 5]), plan.radii, self.grid,
        )  # fmt: skip
        if len(plan.slabs) == 1:  # small enough to keep for the backward pass
            plan.bins.append(b)
        return b

    def groups(self, bins: Bins) -> list[tuple[Tensor, int]]:
        """Blocks of a slab grouped by similar list length: (indices into bins, round size)."""
        cfg, P = self.plan.cfg, self.grid.pixels_per_block
        cnt, order = torch.sort(bins.count, descending=True)
        cnt_l = cnt.tolist()
        out = []
        i, n = 0, len(cnt_l)
        while i < n:
            K = min(cfg.round_size, _round_up(cnt_l[i], 4))
            G = max(1, cfg.chunk // (K * P))
            out.append((order[i : i + G], K))
            i += G
        return out

    def round_inputs(self, bins: Bins, sel: Tensor, r: int, K: int) -> tuple[Tensor, Tensor, Tensor]:
        """For blocks ``sel`` (indices into bins) and round r: instance ids [G, K] (dummy = M),
        block centres, and the coefficient matrix [G, K, 6]."""
        ar = torch.arange(K, device=self.device)
        pos = r * K + ar  # [K]
        cnt = bins.count[sel]
        valid = pos[None, :] < cnt[:, None]
        idx = torch.where(valid, bins.start[sel, None] + pos[None, :], 0)
        inst = torch.where(valid, bins.pair_inst[idx], self.M)
        cx, cy = _block_centres(bins.block_ids[sel], self.grid, self.dtype)
        p = self.par[inst]  # [G, K, 6]
        mx = p[..., 0] - cx[:, None]
        my = p[..., 1] - cy[:, None]
        coef = _coefficients(mx, my, p[..., 2], p[..., 3], p[..., 4], p[..., 5])
        return inst, torch.stack([mx, my], -1), coef

    def alphas(self, coef: Tensor) -> Tensor:
        """ln-alpha polynomial coefficients [G, K, 6] -> alpha [G, K, P] (clamped, skips zeroed)."""
        G, K, _ = coef.shape
        P = self.grid.pixels_per_block
        lna = (coef.reshape(G * K, 6) @ self.basis).view(G, K, P)
        alpha = torch.exp_(lna).clamp_max_(ALPHA_MAX)
        return F.threshold(alpha, self.athr, 0.0)

    def transmittance(self, alpha: Tensor, t_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(one_minus [G,K,P], U = masked transmittance after each Gaussian [G,K,P], w [G,K,P])."""
        G, K, P = alpha.shape
        buf = torch.empty(G, K + 1, P, dtype=alpha.dtype, device=alpha.device)
        buf[:, 0] = t_in
        om = buf[:, 1:]
        torch.sub(1.0, alpha, out=om)
        tc = torch.cumprod(buf, 1)[:, 1:]
        U = F.threshold(tc, T_STOP, 0.0)
        w = alpha / om
        w.mul_(U)
        return om, U, w


def _round_up(x: int, m: int) -> int:
    return max(m, (x + m - 1) // m * m)


def _run_forward(sw: _Sweep) -> tuple[Tensor, Tensor]:
    grid = sw.grid
    nb, P = grid.num_blocks, grid.pixels_per_block
    Dc = sw.feats.shape[1]
    T = _initial_transmittance(grid, sw.dtype, sw.device)
    acc = torch.zeros(nb, Dc, P, dtype=sw.dtype, device=sw.device)
    for k in range(len(sw.plan.slabs)):
        bins = sw.bins(k)
        for gsel, K in sw.groups(bins):
            bid = bins.block_ids[gsel]
            t_g = T[bid]
            acc_g = acc[bid]
            cnt = bins.count[gsel]
            live = torch.arange(gsel.shape[0], device=sw.device)
            r = 0
            while live.numel():
                live = live[(cnt[live] > r * K) & (t_g[live].amax(1) > 0)]
                if not live.numel():
                    break
                inst, _, coef = sw.round_inputs(bins, gsel[live], r, K)
                alpha = sw.alphas(coef)
                _, U, w = sw.transmittance(alpha, t_g[live])
                acc_g[live] += torch.bmm(sw.feats[inst].transpose(1, 2), w)
                t_g[live] = U[:, -1]
                r += 1
            T[bid] = t_g
            acc[bid] = acc_g
    return acc, T


def _run_backward(sw: _Sweep, g_blocks: Tensor, q_total: Tensor) -> tuple[Tensor, Tensor]:
    """g_blocks [nb, P, Dc]: upstream gradient per output channel; q_total [nb, P] = sum_c g_c out_c.

    Returns gradients w.r.t. the instance parameters [M, 6] (mx, my, a, b, c, ln o) and features.
    """
    grid = sw.grid
    P = grid.pixels_per_block
    g_t = g_blocks.transpose(1, 2).contiguous()  # [nb, Dc, P]
    T = _initial_transmittance(grid, sw.dtype, sw.device)
    Q = -q_total  # running (sum_{j<=k} w_j q_j) - Q_total
    g_par = torch.zeros_like(sw.par)
    g_feat = torch.zeros_like(sw.feats)
    basis_t = sw.basis.t().contiguous()  # [P, 6]
    for k in range(len(sw.plan.slabs)):
        bins = sw.bins(k)
        for gsel, K in sw.groups(bins):
            bid = bins.block_ids[gsel]
            t_g, q_g = T[bid], Q[bid]
            gb, gbt = g_blocks[bid], g_t[bid]
            cnt = bins.count[gsel]
            live = torch.arange(gsel.shape[0], device=sw.device)
            r = 0
            while live.numel():
                live = live[(cnt[live] > r * K) & (t_g[live].amax(1) > 0)]
                if not live.numel():
                    break
                inst, mxy, coef = sw.round_inputs(bins, gsel[live], r, K)
                alpha = sw.alphas(coef)
                om, U, w = sw.transmittance(alpha, t_g[live])
                fe = sw.feats[inst]  # [G, K, Dc]
                q = torch.bmm(fe, gbt[live])  # [G, K, P]
                wq = w * q
                qi = torch.cumsum(wq, 1).add_(q_g[live][:, None, :])  # sum_{j<=k} - Q_total
                q_g[live] = qi[:, -1]
                t_g[live] = U[:, -1]
                # dL/dalpha_k = (U_k q_k + qi_k) / (1 - alpha_k) on contributing, unclamped entries
                ga = torch.addcmul(qi, U, q).div_(om)
                a_u = F.threshold(alpha.neg(), -ALPHA_MAX, 0.0)  # -alpha where alpha < 0.999
                live_mask = torch.clamp_max_(U * 1e12, 1.0)
                ga.mul_(a_u).mul_(live_mask)  # = -dL/dlnalpha
                G_, K_ = inst.shape
                g_coef = -(ga.view(G_ * K_, P) @ basis_t).view(G_, K_, 6)
                g_fe = torch.bmm(w, gb[live])  # [G, K, Dc]
                g_p = _coefficient_vjp(mxy, coef, sw.par[inst], g_coef)
                g_par.index_add_(0, inst.reshape(-1), g_p.reshape(-1, 6))
                g_feat.index_add_(0, inst.reshape(-1), g_fe.reshape(-1, g_fe.shape[-1]))
                r += 1
            T[bid] = t_g
            Q[bid] = q_g
    return g_par[: sw.M], g_feat[: sw.M]


def _coefficient_vjp(mxy: Tensor, coef: Tensor, par: Tensor, g: Tensor) -> Tensor:
    """Chain d/dcoef [G,K,6] to d/d(mx, my, a, b, c, ln o) [G,K,6] (mx, my block-local)."""
    mx, my = mxy.unbind(-1)
    a, b, c = par[..., 2], par[..., 3], par[..., 4]
    g0, g1, g2, g3, g4, g5 = g.unbind(-1)
    c1, c2 = coef[..., 1], coef[..., 2]
    d_mx = g1 * a + g2 * b - g0 * c1
    d_my = g1 * b + g2 * c - g0 * c2
    d_a = g1 * mx - 0.5 * (g0 * mx * mx + g3)
    d_b = g1 * my + g2 * mx - g0 * mx * my - g4
    d_c = g2 * my - 0.5 * (g0 * my * my + g5)
    return torch.stack([d_mx, d_my, d_a, d_b, d_c, g0], -1)


class _CompositeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opac: Tensor, feats: Tensor, plan: _Plan):  # type: ignore[override]
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
        counts = pair_counts(means2d.detach()[order], radii[order], grid)
        slabs = depth_slabs(counts, cfg.pair_budget)
    plan = _Plan(grid, cfg, order, slabs, cam, radii)
    if not slabs:
        C, H, W = grid.cameras, grid.height, grid.width
        return feats.new_zeros(C, H, W, feats.shape[1]) + 0.0 * feats.sum()
    return _CompositeFn.apply(means2d, conics, opacities, feats, plan)
