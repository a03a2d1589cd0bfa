"""Front-to-back alpha compositing of projected Gaussians, as a custom autograd Function (private).

Per pixel (centre ``p``), Gaussians in depth order with ``alpha = min(0.999, o exp(-power))``,
``power = 0.5 (a dx² + c dy²) + b dx dy``, ``dx = u - p_x``; those with ``alpha < 1/255`` are
skipped; the pixel stops *before* the first Gaussian that would bring its transmittance to
``<= 1e-4``. Outputs ``sum_k w_k f_k`` and ``sum_k w_k`` with ``w_k = alpha_k T_k``.

How it runs (pure torch, vectorized):

* blocks of ``S x S`` pixels (see :mod:`._binning`) advance through their depth-sorted lists in
  rounds; round r covers the next ``K_r`` list entries of every live block (``K_r`` doubles from
  ``round_start`` up to ``round_max``, clipped to what is left), in batches of blocks bounded by
  ``chunk`` (Gaussian, pixel) evaluations (the memory bound);
* the exponent of all (Gaussian, pixel) pairs of a batch is one matrix product
  ``coef [G*K, 6] @ basis [6, S*S]`` (a Gaussian's exponent is a quadratic polynomial in the
  pixel's block-local coordinates);
* transmittance is a ``cumprod`` along the round with the carried transmittance in front; a pixel
  that reached the stop carries transmittance 0 from then on, and blocks whose pixels are all
  done retire;
* depth slabs of at most ``pair_budget`` (Gaussian, block) pairs bound the binning memory;
* the forward pass records its schedule (which blocks, which list range, in which order); backward
  replays it, recomputing each batch (nothing per pair is stored) and using the saved outputs for
  the "light from behind" term: ``dC/dalpha_k = T_k f_k - (sum_{j>k} w_j f_j) / (1 - alpha_k)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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

    block: int = 4  # pixels per block side; divides 16
    round_start: int = 16  # list entries per block in the first round (then doubling)
    round_max: int = 256  # largest round
    chunk: int = 1 << 19  # (Gaussian, pixel) evaluations per batch (memory bound)
    pair_budget: int = 1 << 23  # candidate (Gaussian, block) pairs binned at once (memory bound)
    cache_pairs: int = 1 << 25  # keep the bins for backward up to this many pairs (int32 each)
    # Worker threads for the compositing (None: torch's intra-op thread count). Each runs its ops on
    # one intra-op thread and pulls independent jobs (groups of blocks) from a shared queue, which
    # degrades gracefully on a busy machine, unlike per-op OpenMP teams.
    workers: int | None = None
    jobs_per_worker: int = 6
    # Below this many (Gaussian, pixel) candidate evaluations use one worker.
    serial_below: int = 1 << 21


@dataclass
class _Batch:
    """One step of the schedule: blocks ``sel`` (indices into the slab's bins), list entries
    ``[start, start + K)`` of each."""

    sel: Tensor
    start: int
    K: int


@dataclass
class _Job:
    """Blocks (indices into a slab's bins) composited front to back by one worker, with the
    batches the forward pass ran for them (replayed by backward)."""

    blocks: Tensor
    count: Tensor  # their list lengths (descending)
    batches: list[_Batch] = field(default_factory=list)


@dataclass
class _Plan:
    """Everything about one call that does not need autograd. Instances are handled by *depth
    rank* (front to back): rank r is instance ``order[r]``; per-instance arrays are rank ordered."""

    grid: Grid
    cfg: CompositeConfig
    order: Tensor  # [M] rank -> instance
    table: Tensor  # [M, 6] (u, v, a, b, c, opacity) by rank
    cam: Tensor  # [M] by rank
    radii: Tensor  # [M, 2] by rank
    slabs: list[tuple[int, int]]  # rank ranges
    workers: int = 1
    bins: dict[int, Bins] = field(default_factory=dict)  # kept for backward (see cache_pairs)
    jobs: list[list[_Job]] = field(default_factory=list)  # per slab, batches recorded by forward


def _run_jobs(jobs: list[_Job], fn: Callable[[_Job, int], None], workers: int) -> None:
    """Run ``fn(job, worker_id)`` for every job on ``workers`` threads (the caller is worker 0)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            fn(job, 0)
        return
    lock = threading.Lock()
    queue = iter(jobs)
    errors: list[BaseException] = []

    def loop(wid: int) -> None:
        if wid:
            torch.set_num_threads(1)  # this thread's OpenMP/MKL team size
        try:
            while not errors:
                with lock:
                    job = next(queue, None)
                if job is None:
                    return
                fn(job, wid)
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(1, workers)]
    for t in threads:
        t.start()
    loop(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _make_jobs(bins: Bins, n_jobs: int) -> list[_Job]:
    """Split a slab's blocks (longest lists first) into about ``n_jobs`` runs of similar work."""
    count, order = torch.sort(bins.count, descending=True)
    if n_jobs <= 1 or count.numel() <= 1:
        return [_Job(order, count)] if count.numel() else []
    cum = torch.cumsum(count, 0)
    cuts = torch.searchsorted(cum, torch.arange(1, n_jobs, device=cum.device) * (int(cum[-1]) / n_jobs))
    edges = sorted({0, count.numel(), *[int(c) + 1 for c in cuts.tolist()]})
    edges = [e for e in edges if e <= count.numel()]
    return [_Job(order[a:b], count[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]


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

    def __init__(self, feats: Tensor, plan: _Plan):
        """``feats`` [M, Dc] in instance order; everything else comes from the plan."""
        self.plan = plan
        self.grid = plan.grid
        dt, dev = plan.table.dtype, plan.table.device
        self.dtype, self.device = dt, dev
        # rank-ordered parameters with one trailing dummy row (the padding target)
        M = plan.table.shape[0]
        self.M = M
        self.par = torch.empty(M + 1, 6, dtype=dt, device=dev)  # mx, my, a, b, c, ln(o)
        self.par[:M, :5] = plan.table[:, :5]
        torch.log(plan.table[:, 5], out=self.par[:M, 5])
        self.par[M] = 0.0
        self.par[M, 5] = _DUMMY_LOG_OPACITY
        self.feats = torch.empty(M + 1, feats.shape[1], dtype=dt, device=dev)
        torch.index_select(feats, 0, plan.order, out=self.feats[:M])
        self.feats[M] = 0.0
        self.basis = _basis(self.grid.block, dt, dev)  # [6, P]
        self.athr = _alpha_threshold(dt)

    def bins(self, k: int) -> Bins:
        """Bins of depth slab k (kept for the backward pass while they fit ``cache_pairs``)."""
        plan = self.plan
        if k in plan.bins:
            return plan.bins[k]
        r0, r1 = plan.slabs[k]
        bins = bin_instances(r0, r1, plan.table, plan.cam, plan.radii, self.grid)
        if sum(b.num_pairs for b in plan.bins.values()) + bins.num_pairs <= plan.cfg.cache_pairs:
            plan.bins[k] = bins
        return bins

    def batch(self, bins: Bins, b: _Batch, state: Tensor) -> dict[str, Tensor]:
        """Recompute one batch; ``state`` [nb, P] is the carried transmittance."""
        K, sel = b.K, b.sel
        G, P = sel.shape[0], self.grid.pixels_per_block
        bid = bins.block_ids.index_select(0, sel)  # int64
        pos = b.start + torch.arange(K, device=self.device)
        idx = bins.start.index_select(0, sel)[:, None] + pos
        valid = pos < bins.count.index_select(0, sel)[:, None]
        idx.clamp_(max=bins.num_pairs - 1)
        inst = torch.where(valid, bins.pair_inst.index_select(0, idx.view(-1)).view(G, K), self.M)
        flat = inst.view(-1)
        p = self.par.index_select(0, flat).view(G, K, 6)
        S = self.grid.block
        local = bid % self.grid.blocks_per_camera
        cx = (local % self.grid.nbx).to(self.dtype) * S + S / 2
        cy = torch.div(local, self.grid.nbx, rounding_mode="floor").to(self.dtype) * S + S / 2
        mx = p[..., 0] - cx[:, None]
        my = p[..., 1] - cy[:, None]
        coef = _coefficients(mx, my, p[..., 2], p[..., 3], p[..., 4], p[..., 5])
        lna = (coef.view(G * K, 6) @ self.basis).view(G, K, P)
        alpha = F.threshold(torch.exp_(lna).clamp_max_(ALPHA_MAX), self.athr, 0.0)
        buf = torch.empty(G, K + 1, P, dtype=alpha.dtype, device=alpha.device)
        buf[:, 0] = state.index_select(0, bid)
        om = buf[:, 1:]
        torch.sub(1.0, alpha, out=om)
        U = F.threshold(torch.cumprod(buf, 1)[:, 1:], T_STOP, 0.0)  # masked T after each Gaussian
        fe = self.feats.index_select(0, flat).view(G, K, -1)
        return {"bid": bid, "inst": inst, "mx": mx, "my": my, "p": p, "coef": coef, "alpha": alpha,
                "om": om, "U": U, "fe": fe}  # fmt: skip


def _run_forward(sw: _Sweep) -> Tensor:
    """Composite everything and record the batches in ``sw.plan``. Returns acc [nb, Dc, P]."""
    grid, cfg, plan = sw.grid, sw.plan.cfg, sw.plan
    nb, P = grid.num_blocks, grid.pixels_per_block
    T = _initial_transmittance(grid, sw.dtype, sw.device)
    acc = torch.zeros(nb, sw.feats.shape[1], P, dtype=sw.dtype, device=sw.device)
    plan.jobs = []
    for k in range(len(plan.slabs)):
        bins = sw.bins(k)
        jobs = _make_jobs(bins, plan.workers * cfg.jobs_per_worker if plan.workers > 1 else 1)
        plan.jobs.append(jobs)

        def run(job: _Job, wid: int, bins: Bins = bins) -> None:
            live, count = job.blocks, job.count
            start, K = 0, cfg.round_start
            while live.numel():
                G = max(1, cfg.chunk // (K * P))
                rem = (count[::G] - start).tolist()  # longest remaining list of each batch
                for j, i in enumerate(range(0, live.shape[0], G)):
                    b = _Batch(live[i : i + G], start, min(K, _round_up(rem[j], 4)))
                    job.batches.append(b)
                    d = sw.batch(bins, b, T)
                    w = d["alpha"].div_(d["om"]).mul_(d["U"])  # alpha T_before where contributing
                    acc.index_add_(0, d["bid"], torch.bmm(d["fe"].transpose(1, 2), w))
                    T.index_copy_(0, d["bid"], d["U"][:, -1])
                start += K
                K = min(2 * K, cfg.round_max)
                alive = T.index_select(0, bins.block_ids.index_select(0, live)).amax(1) > 0
                keep = (count > start) & alive
                live, count = live[keep], count[keep]

        _run_jobs(jobs, run, plan.workers)
    return acc


def _run_backward(sw: _Sweep, g_blocks: Tensor, q_total: Tensor) -> tuple[Tensor, Tensor]:
    """Replay the forward batches with gradients.

    g_blocks [nb, P, Dc]: upstream gradient per output channel; q_total [nb, P] = sum_c g_c out_c.
    Returns gradients w.r.t. the instance parameters [M, 6] (mx, my, a, b, c, ln o) and features.
    """
    grid, plan = sw.grid, sw.plan
    P = grid.pixels_per_block
    g_t = g_blocks.transpose(1, 2).contiguous()  # [nb, Dc, P]
    T = _initial_transmittance(grid, sw.dtype, sw.device)
    Q = -q_total  # running (sum_{j<=k} w_j q_j) - Q_total per pixel
    g_par = [torch.zeros_like(sw.par) for _ in range(plan.workers)]  # one per worker: no races
    g_feat = [torch.zeros_like(sw.feats) for _ in range(plan.workers)]
    for k, jobs in enumerate(plan.jobs):
        bins = sw.bins(k)

        def run(job: _Job, wid: int, bins: Bins = bins) -> None:
            for b in job.batches:
                d = sw.batch(bins, b, T)
                bid, alpha, om, U = d["bid"], d["alpha"], d["om"], d["U"]
                w = alpha / om * U
                gbt = g_t.index_select(0, bid)
                q = torch.bmm(d["fe"], gbt)  # [G, K, P]: sum_c f_c g_c
                qi = torch.cumsum(w * q, 1).add_(Q.index_select(0, bid)[:, None, :])
                Q.index_copy_(0, bid, qi[:, -1])
                T.index_copy_(0, bid, U[:, -1])
                # dL/dalpha_k = (U_k q_k + sum_{j<=k} w_j q_j - Q_total) / (1 - alpha_k), kept only
                # on contributing (U > 0), unclamped (alpha < 0.999) entries; times alpha (ln-alpha)
                ga = torch.addcmul(qi, U, q).div_(om)
                ga.mul_(F.threshold(alpha.neg(), -ALPHA_MAX, 0.0))  # * (-alpha) where unclamped
                ga.mul_(torch.clamp_max_(U * 1e12, 1.0))  # * [U > 0]
                G, K = d["inst"].shape
                g_coef = (sw.basis @ ga.view(G * K, P).t()).t().reshape(G, K, 6).neg_()
                g_fe = torch.bmm(gbt, w.transpose(1, 2)).transpose(1, 2)  # [G, K, Dc]
                g_p = _coefficient_vjp(d["mx"], d["my"], d["coef"], d["p"], g_coef)
                flat = d["inst"].reshape(-1).long()  # int64: index_add_ is much slower with int32
                g_par[wid].index_add_(0, flat, g_p.view(-1, 6))
                g_feat[wid].index_add_(0, flat, g_fe.reshape(-1, g_fe.shape[-1]))

        _run_jobs(jobs, run, plan.workers)
    return sum(g_par[1:], g_par[0])[: sw.M], sum(g_feat[1:], g_feat[0])[: sw.M]


def depth_order(depths: Tensor) -> Tensor:
    """Stable front-to-back order of ``depths`` [M] (ties keep index order, like gsplat's radix sort),
    sorted as integer keys (the IEEE bit patterns made monotonic), which is several times faster."""
    if depths.dtype == torch.float32:
        bits = depths.contiguous().view(torch.int32)
        key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    elif depths.dtype == torch.float64:
        bits = depths.contiguous().view(torch.int64)
        key = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
    else:
        key = depths
    return torch.sort(key, stable=True).indices


def make_plan(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    depths: Tensor,
    cam: Tensor,
    radii: Tensor,
    grid: Grid,
    cfg: CompositeConfig,
    threads: int,
) -> _Plan:
    """Depth order, rank-ordered tables, memory slabs and worker count for compositing M instances.

    means2d [M, 2], conics [M, 3], opacities [M], depths [M] (sort key), cam [M], radii [M, 2];
    ``threads`` is the parallelism available (``cfg.workers`` overrides it).
    """
    with torch.no_grad():
        order = depth_order(depths.detach())
        table = torch.cat([means2d, conics, opacities[:, None]], 1).detach().index_select(0, order)
        radii_r = radii.index_select(0, order)
        counts = pair_counts(table[:, :2], radii_r, table[:, 5], grid)
        slabs = depth_slabs(counts, cfg.pair_budget)
        workers = cfg.workers or threads
        if means2d.device.type != "cpu" or int(counts.sum()) * grid.pixels_per_block < cfg.serial_below:
            workers = 1
    return _Plan(grid, cfg, order, table, cam.index_select(0, order), radii_r, slabs, max(1, workers))


def composite_forward(feats: Tensor, plan: _Plan) -> Tensor:
    """``sum_k w_k f_k`` per pixel, [C, H, W, Dc] (no background); records the schedule in plan.

    feats [M, Dc] per instance (no autograd); the geometry comes from :func:`make_plan`.
    """
    grid = plan.grid
    if not plan.slabs:
        return feats.new_zeros(grid.cameras, grid.height, grid.width, feats.shape[1])
    sw = _Sweep(feats, plan)
    return _blocks_to_image(_run_forward(sw), grid)


def composite_backward(
    opac: Tensor, feats: Tensor, out: Tensor, g_out: Tensor, plan: _Plan
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`composite_forward` (after it ran with ``plan``) w.r.t. means2d, conics,
    opac and feats, given its output ``out`` and the upstream gradient ``g_out`` [C, H, W, Dc]."""
    if not plan.slabs:
        M = feats.shape[0]
        z = feats.new_zeros(M, 6)
        return z[:, :2], z[:, 2:5], z[:, 5], torch.zeros_like(feats)
    sw = _Sweep(feats, plan)
    g_blocks = _image_to_blocks(g_out.contiguous(), plan.grid).contiguous()  # [nb, P, Dc]
    q_total = _image_to_blocks((g_out * out).sum(-1, keepdim=True), plan.grid)[..., 0]
    g_rank, g_feat_rank = _run_backward(sw, g_blocks, q_total)  # by depth rank
    g_par = torch.empty_like(g_rank).index_copy_(0, plan.order, g_rank)
    g_feat = torch.empty_like(g_feat_rank).index_copy_(0, plan.order, g_feat_rank)
    return g_par[:, :2], g_par[:, 2:5], g_par[:, 5] / opac, g_feat
