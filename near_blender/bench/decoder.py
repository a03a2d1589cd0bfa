"""Stage-2 decoder benchmark: per-view latency of the cached path (near-tiny, CPU, 256^2, ~20k
voxels), FLOP counts of near-paper, and the fraction of the measured CPU matmul peak reached.

FLOPs are counted as 2 per multiply-add, for matrix products only (Linear layers and attention
score / value products; element-wise work, norms, activations and the rasterizer are left out).
:func:`stage2_flops` gives them analytically from the model configs and the asset's voxels (Swin
attention from the real window occupancy); the tests check the formulas against
``torch.utils.flop_counter.FlopCounterMode``, and the benchmark prints both for near-tiny.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..models.intrinsic_decoder import IntrinsicAwareDecoder
from ..models.lighting_decoder import LightingAwareDecoder
from ..models.radiance_mlp import RadianceMLP
from ..models.registry import get_model_class
from ..models.relightable import RelightableDecoder, stage2_configs
from ..sparse import SparseTensor, window_partition
from . import timeit

# ---------------------------------------------------------------------------------------------
# Assets and cameras
# ---------------------------------------------------------------------------------------------


def shell_voxels(target: int = 20_000, resolution: int = 64) -> torch.Tensor:
    """Integer coords ``[N, 3]`` of a voxelized closed surface with about ``target`` voxels.

    The shape: a sphere shell (radius 0.45 of the box) plus a smaller inner shell and a torus
    shell (a stand-in for a TRELLIS-size asset: ~20k surface voxels at 64^3); the radii are scaled
    to approach ``target``.
    """
    ar = torch.arange(resolution)
    g = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), -1).reshape(-1, 3)
    p = (g.double() + 0.5) / resolution - 0.5
    h = 0.5 / resolution

    def shell(dist: torch.Tensor) -> torch.Tensor:  # voxels whose cube the surface crosses (|sdf| <= h sqrt3)
        return dist.abs() <= h * math.sqrt(3.0)

    def mask(scale: float) -> torch.Tensor:
        r = p.norm(dim=-1)
        m = shell(r - 0.45 * scale) | shell(r - 0.2 * scale)
        q = torch.stack([p[:, :2].norm(dim=-1) - 0.3 * scale, p[:, 2]], -1)
        return m | shell(q.norm(dim=-1) - 0.08 * scale)

    lo, hi = 0.2, 1.0
    for _ in range(20):  # bisection on the size
        mid = 0.5 * (lo + hi)
        if int(mask(mid).sum()) < target:
            lo = mid
        else:
            hi = mid
    return g[mask(hi)]


def bench_slat(target: int = 20_000, channels: int = 8, seed: int = 0) -> SparseTensor:
    c = shell_voxels(target)
    gen = torch.Generator().manual_seed(seed)
    return SparseTensor.from_list([c], [torch.randn(len(c), channels, generator=gen)])


def orbit(
    n: int, size: int, distance: float = 2.0, fov_deg: float = 40.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` OpenCV cameras ``([n, 4, 4], [n, 3, 3])`` around the object (Z up), square images."""
    from ..render.camera import look_at

    vms, Ks = [], []
    f = size / (2 * math.tan(math.radians(fov_deg) / 2))
    for i in range(n):
        a = 2 * math.pi * i / n + 0.3
        eye = (distance * math.cos(a) * 0.9, distance * math.sin(a) * 0.9, 0.45 * distance)
        vms.append(torch.tensor(look_at(eye), dtype=torch.float32))
        Ks.append(torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float32))
    return torch.stack(vms), torch.stack(Ks)


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def _linear(n: int, i: int, o: int) -> int:
    return 2 * n * i * o


def iad_flops(model: IntrinsicAwareDecoder, slat: SparseTensor) -> int:
    """Matmul FLOPs of one IAD forward on ``slat`` (per asset)."""
    N, C, R, B = len(slat), model.model_channels, model.num_register_tokens, slat.batch_size
    hidden = int(C * model.mlp_ratio)
    total = _linear(N, model.latent_channels, C)
    for blk in model.blocks:
        # register cross-attention: q, out, the registers' k/v, scores, values
        total += 2 * _linear(N, C, C) + _linear(B * R, C, 2 * C) + 4 * N * R * C
        if model.register_mode == "aggregate":
            total += 2 * _linear(B * R, C, C) + _linear(N, C, 2 * C) + 4 * N * R * C
        if blk.attn.attn_mode == "windowed":
            _, _, lens = window_partition(slat, blk.attn.window_size, blk.attn.shift_window)
            pairs = sum(n * n for n in lens)
        else:
            pairs = sum(n * n for n in slat.seqlens)
        total += _linear(N, C, 3 * C) + _linear(N, C, C) + 4 * pairs * C
        total += _linear(N, C, hidden) + _linear(N, hidden, C)
    return total


def lad_asset_flops(lad: LightingAwareDecoder, num_voxels: int, num_registers: int, batch: int = 1) -> int:
    """Matmul FLOPs of ``prepare_asset`` (input layer + register keys/values, once per asset)."""
    C = lad.model_channels
    return _linear(num_voxels, lad.latent_channels, C) + len(lad.blocks) * _linear(
        batch * num_registers, lad.cond_channels, 2 * C
    )


def lad_lighting_flops(lad: LightingAwareDecoder, num_tokens: int, batch: int = 1) -> int:
    """Matmul FLOPs of ``prepare_lighting`` (light keys/values of every block, once per lighting)."""
    return len(lad.blocks) * _linear(batch * num_tokens, lad.cond_channels, 2 * lad.model_channels)


def lad_view_flops(lad: LightingAwareDecoder, num_voxels: int, num_registers: int, num_tokens: int) -> int:
    """Matmul FLOPs of one ``decode`` (per view): view embedding, blocks, heads."""
    N, C, lay = num_voxels, lad.model_channels, lad.layout
    K, F = lay.num_gaussians, lay.color_feature_dim
    hidden = int(C * 4.0) if not lad.blocks else lad.blocks[0].mlp.mlp[0].out_features
    ve = lad.view_embedding
    total = _linear(N, ve.ob_views_encoder.in_features, C) + _linear(N, ve.ob_dists_encoder.in_features, C)
    for _ in lad.blocks:
        total += 4 * _linear(N, C, C) + 4 * N * C * (num_registers + num_tokens)
        total += _linear(N, C, hidden) + _linear(N, hidden, C)
    total += _linear(N, C, C) + _linear(N, C, 14 * K)  # gs_out_layer
    total += _linear(N, C, C) + _linear(N, C, (2 + lay.n_extra_pbr) * K)  # pbr_out_layer
    total += _linear(N, C, 3 * K) + _linear(N, C, (F + 1 + lay.n_extra_light) * K)  # scale, rgb
    return total + 2 * 18  # camera centre -R^T t, computed twice


def radiance_flops(mlp: RadianceMLP, num_gaussians: int) -> int:
    """Matmul FLOPs of the radiance MLP on ``num_gaussians`` Gaussians."""
    return sum(
        _linear(num_gaussians, m.in_features, m.out_features)
        for m in mlp.mlp
        if isinstance(m, torch.nn.Linear)
    )


def stage2_flops(
    configs: dict[str, dict[str, Any]], slat: SparseTensor, tokenizer_input: tuple[int, int]
) -> dict[str, int]:
    """Analytic matmul FLOPs of the stage-2 stack for ``slat`` (one item), per asset / lighting / view.

    Built on the meta device (no memory). ``per_view`` counts every Gaussian (no culling) in the
    radiance MLP. The tokenizer is counted with ``FlopCounterMode`` on the meta device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        models = {k: get_model_class(c["name"])(**c["args"]) for k, c in configs.items()}
    iad, lad, tok, mlp = models["decoder"], models["renderer"], models["hdri_encoder"], models["neural_basis"]
    N = len(slat)
    R, L = iad.num_register_tokens, tok.num_tokens
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        tok(torch.empty(1, 9, *tokenizer_input, device="meta"))
    tok_flops = fc.get_total_flops()
    return {
        "per_asset": iad_flops(iad, slat) + lad_asset_flops(lad, N, R),
        "per_lighting": tok_flops + lad_lighting_flops(lad, L),
        "per_view_decoder": lad_view_flops(lad, N, R, L),
        "per_view_radiance": radiance_flops(mlp, N * lad.layout.num_gaussians),
    }


def counted_flops(fn: Any, *modules: torch.nn.Module) -> int:
    """Matmul FLOPs of ``fn()`` measured with ``FlopCounterMode`` (CPU SDPA counted too).

    ``modules`` are frozen (``requires_grad_(False)``) while counting: FlopCounterMode's module
    tracker cannot follow parameters that require grad through ``no_grad`` code.
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa_flop(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(q, k, v)

    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)

    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math"):
        op = getattr(torch.ops.aten, name, None)
        if op is not None and name.endswith("_for_cpu"):
            mapping[op] = sdpa_flop
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
            fn()
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    return int(fc.get_total_flops())


# ---------------------------------------------------------------------------------------------
# Peak
# ---------------------------------------------------------------------------------------------


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """Measured fp32 matmul throughput (FLOP/s) of this process: best of ``repeat`` n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = math.inf
    a @ b
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


@dataclass
class DecoderTimes:
    """What :func:`run` measured: seconds (medians), matmul FLOPs, counts."""

    peak: float  # fp32 matmul FLOP/s of this process
    voxels: int  # N, the asset's voxels
    size: int  # square image side, pixels
    gaussians_per_voxel: int  # near-tiny's K
    t_asset: float  # near-tiny, once per asset (IAD + LAD cache)
    t_light: float  # near-tiny, once per lighting
    views: list[float]  # near-tiny, whole cached-path view, one per camera
    t_view: float
    t_lad: float  # near-tiny per view: LAD + heads
    t_render: float  # near-tiny per view: radiance MLP + two rasterizations
    kept: list[int]  # Gaussians rasterized per pass, per camera
    c_view: int  # counted FLOPs, near-tiny LAD + heads per view
    c_asset: int  # counted FLOPs, near-tiny per asset
    tiny_flops: dict[str, int]  # analytic near-tiny FLOPs (stage2_flops)
    paper_flops: dict[str, int]  # analytic near-paper FLOPs for the same asset
    sub: int  # voxels of the measured near-paper LAD
    t_paper: float  # near-paper LAD + heads on ``sub`` voxels, per view
    c_paper: int  # its counted FLOPs
    f_paper_sub: int  # its analytic FLOPs


def _time_tiny(
    slat: SparseTensor, cfg: dict[str, dict[str, Any]], size: int, repeat: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """near-tiny's cached path on ``slat``: per asset, per lighting, and per view for three orbit
    cameras (whole view, LAD + heads, radiance + rasterization), with counted FLOPs. Returns the
    measurements (fields of :class:`DecoderTimes`) and the first camera's viewmat ``[1, 4, 4]``."""
    model = RelightableDecoder.from_configs(cfg, backend="torch").eval()
    env = torch.randn(1, 9, 64, 64)
    vms, Ks = orbit(3, size)
    with torch.no_grad():
        t_asset = timeit(lambda: model.encode_asset(slat), repeat=repeat, warmup=1)
        t_light = timeit(lambda: model.encode_lighting(env), repeat=repeat, warmup=1)
        asset, light = model.encode_asset(slat), model.encode_lighting(env)
        views, lads, renders, kept = [], [], [], []
        for v in range(vms.shape[0]):
            vm, K = vms[v : v + 1], Ks[v : v + 1]
            views.append(
                timeit(lambda vm=vm, K=K: model.decode_view(asset, light, vm, K, size, size), repeat=repeat)
            )
            lads.append(timeit(lambda vm=vm: model.gaussians(asset, light, vm), repeat=repeat))
            g = model.gaussians(asset, light, vm)
            renders.append(
                timeit(lambda g=g, vm=vm, K=K: model.render_gaussians(g, vm, K, size, size), repeat=repeat)
            )
            kept.append(int((g.opacities >= 1.0 / 255.0).sum()))
        vm0 = vms[:1]
        c_view = counted_flops(lambda: model.gaussians(asset, light, vm0), model)
        c_asset = counted_flops(lambda: model.encode_asset(slat), model)
    t_view, t_lad, t_render = (sorted(x)[len(x) // 2] for x in (views, lads, renders))
    measured = {"t_asset": t_asset, "t_light": t_light, "views": views, "t_view": t_view, "t_lad": t_lad,
                "t_render": t_render, "kept": kept, "c_view": c_view, "c_asset": c_asset}  # fmt: skip
    return measured, vm0


def _time_paper_lad(
    paper_cfg: dict[str, dict[str, Any]], slat: SparseTensor, sub: int, vm0: torch.Tensor, quick: bool
) -> dict[str, Any]:
    """A width-768 near-paper LAD (random weights, seed 0) decoding the first ``sub`` voxels of
    ``slat`` under 4096 light tokens, seen by ``vm0``: seconds, counted and analytic FLOPs."""
    sub_slat = SparseTensor.from_list([slat.coords[:sub, 1:]], [slat.feats[:sub]])
    torch.manual_seed(0)
    lad = LightingAwareDecoder(**paper_cfg["renderer"]["args"]).eval()
    with torch.no_grad():
        h = SparseTensor(torch.randn(sub, 768), sub_slat.coords)
        la = lad.prepare_asset(h, torch.randn(1, 16, 768))
        ll = lad.prepare_lighting(torch.randn(1, 4096, 768))
        t_paper = timeit(lambda: lad.decode(la, ll, vm0), repeat=1 if quick else 2)
        c_paper = counted_flops(lambda: lad.decode(la, ll, vm0), lad)
    return {
        "sub": sub,
        "t_paper": t_paper,
        "c_paper": c_paper,
        "f_paper_sub": lad_view_flops(lad, sub, 16, 4096),
    }


def measure(quick: bool = False) -> DecoderTimes:
    """Run the benchmark's measurements (near-tiny's cached path, FLOPs, a near-paper LAD)."""
    torch.manual_seed(0)
    size = 128 if quick else 256
    target = 4000 if quick else 20_000
    repeat = 1 if quick else 3
    peak = matmul_peak(1024 if quick else 2048, 3 if quick else 5)

    slat = bench_slat(target)
    cfg = stage2_configs("near-tiny")
    tiny, vm0 = _time_tiny(slat, cfg, size, repeat)
    tiny_flops = stage2_flops(cfg, slat, (64, 64))
    K_tiny = cfg["renderer"]["args"]["representation_config"]["num_gaussians"]

    # near-paper: analytic FLOPs for the same asset, and a measured width-768 LAD on a voxel subset
    paper_cfg = stage2_configs("near-paper")
    paper = stage2_flops(paper_cfg, slat, (512, 512))
    big = _time_paper_lad(paper_cfg, slat, 256 if quick else 2048, vm0, quick)
    return DecoderTimes(peak=peak, voxels=len(slat), size=size, gaussians_per_voxel=K_tiny, **tiny,
                        tiny_flops=tiny_flops, paper_flops=paper, **big)  # fmt: skip


def _efficiency(m: DecoderTimes) -> dict[str, float]:
    """Fractions of the measured matmul peak reached (analytic FLOPs / seconds / peak)."""
    return {
        "tiny_view": m.tiny_flops["per_view_decoder"] / m.t_lad / m.peak,
        "tiny_asset": m.tiny_flops["per_asset"] / m.t_asset / m.peak,
        "paper_view": m.f_paper_sub / m.t_paper / m.peak,
    }


def _summary(m: DecoderTimes) -> list[str]:
    """The report's summary sentences."""
    frac, paper, G = _efficiency(m), m.paper_flops, 1e9
    N, size, sub, peak = m.voxels, m.size, m.sub, m.peak
    return [
        f"Cached path, near-tiny, {N} voxels ({N * m.gaussians_per_voxel} Gaussians before culling), {size}x{size}, "
        f"CPU ({torch.get_num_threads()} threads): {m.t_view * 1e3:.0f} ms per view = decoder (LAD + heads) "
        f"{m.t_lad * 1e3:.0f} ms + radiance MLP and two rasterization passes {m.t_render * 1e3:.0f} ms "
        f"(median of {len(m.views)} views; {sum(m.kept) // len(m.kept)} Gaussians rasterized per pass).",
        f"Once per asset (IAD + LAD asset cache): {m.t_asset * 1e3:.0f} ms; once per lighting (tokenizer 64x64 + "
        f"light K/V): {m.t_light * 1e3:.0f} ms.",
        f"Measured fp32 matmul peak: {peak / G:.1f} GFLOP/s. Decoder efficiency: near-tiny per view "
        f"{100 * frac['tiny_view']:.1f}% of peak, near-tiny IAD {100 * frac['tiny_asset']:.1f}%, near-paper LAD "
        f"(width 768, {sub} voxels) {100 * frac['paper_view']:.1f}%.",
        f"near-paper FLOPs for this {N}-voxel asset: {paper['per_view_decoder'] / 1e12:.2f} TFLOP per view "
        f"(LAD + heads) + {paper['per_view_radiance'] / G:.1f} GFLOP radiance MLP (32 Gaussians/voxel, no culling); "
        f"{paper['per_asset'] / 1e12:.2f} TFLOP per asset (IAD); {paper['per_lighting'] / G:.0f} GFLOP per lighting "
        f"(tokenizer 512x512 + light K/V).",
        f"At the measured peak a near-paper view would take >= {paper['per_view_decoder'] / peak:.0f} s on this CPU; "
        f"the paper reports 30 FPS on a GPU.",
    ]


def _flop_rows(m: DecoderTimes) -> list[list[Any]]:
    """The FLOP table: model, part, analytic GFLOP, counted GFLOP (or "")."""
    tiny, paper, G = m.tiny_flops, m.paper_flops, 1e9
    return [
        ["near-tiny", "per view (LAD + heads)", tiny["per_view_decoder"] / G, m.c_view / G],
        ["near-tiny", "per view (radiance MLP, all Gaussians)", tiny["per_view_radiance"] / G, ""],
        ["near-tiny", "per asset (IAD + LAD cache)", tiny["per_asset"] / G, m.c_asset / G],
        ["near-tiny", "per lighting", tiny["per_lighting"] / G, ""],
        ["near-paper", "per view (LAD + heads)", paper["per_view_decoder"] / G, ""],
        ["near-paper", "per view (radiance MLP, all Gaussians)", paper["per_view_radiance"] / G, ""],
        ["near-paper", "per asset (IAD + LAD cache)", paper["per_asset"] / G, ""],
        ["near-paper", "per lighting (tokenizer 512² + K/V)", paper["per_lighting"] / G, ""],
        [f"near-paper, {m.sub} voxels", "per view (LAD + heads)", m.f_paper_sub / G, m.c_paper / G],
    ]


def _time_rows(m: DecoderTimes) -> list[list[Any]]:
    """The latency table: what, ms, GFLOP/s (or ""), % of the matmul peak (or "")."""
    frac, tiny, G = _efficiency(m), m.tiny_flops, 1e9
    return [
        ["near-tiny per view (cached path)", m.t_view * 1e3, "", ""],
        ["  decoder: LAD + heads", m.t_lad * 1e3, tiny["per_view_decoder"] / m.t_lad / G, 100 * frac["tiny_view"]],
        ["  radiance MLP + 2 rasterizations", m.t_render * 1e3, "", ""],
        ["near-tiny per asset (IAD + cache)", m.t_asset * 1e3, tiny["per_asset"] / m.t_asset / G,
         100 * frac["tiny_asset"]],
        ["near-tiny per lighting", m.t_light * 1e3, "", ""],
        [f"near-paper LAD + heads, {m.sub} voxels", m.t_paper * 1e3, m.f_paper_sub / m.t_paper / G,
         100 * frac["paper_view"]],
        ["fp32 matmul peak (baseline)", "", m.peak / G, 100.0],
    ]  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark's report: summary, latency and FLOP tables, meta (see the module docstring)."""
    m = measure(quick)
    N = m.voxels
    return {
        "title": "Stage-2 decoder (IAD + LAD + radiance MLP + rasterization)",
        "summary": _summary(m),
        "tables": [
            {
                "name": "Latency (CPU)",
                "columns": ["what", "ms", "GFLOP/s", "% of matmul peak"],
                "rows": _time_rows(m),
            },
            {
                "name": f"Matmul FLOPs for the {N}-voxel asset (analytic; counted = FlopCounterMode)",
                "columns": ["model", "part", "GFLOP (analytic)", "GFLOP (counted)"],
                "rows": _flop_rows(m),
            },
        ],
        "meta": {
            "voxels": N,
            "image": f"{m.size}x{m.size}",
            "views": len(m.views),
            "gaussians_per_voxel_tiny": m.gaussians_per_voxel,
            "gaussians_rasterized_per_pass": m.kept,
            "view_ms": [round(v * 1e3, 1) for v in m.views],
            "peak_gflops": round(m.peak / 1e9, 2),
            "command": "python -m near_blender.cli bench decoder --out benchmarks"
            + (" --quick" if quick else ""),
        },
    }
