"""The paper-size stage 2 on a CUDA device (``near bench decoder-gpu``; needs a GPU).

near-paper (IAD 12 blocks + LAD 6 blocks, width 768, 32 Gaussians per voxel, 4096 lighting
tokens) with random weights on a ~20k-voxel shell asset (the CPU benchmark's asset), views of
512² around it. Timed per asset (IAD + LAD asset cache), per lighting (tokenizer on a 512²
environment + light K/V), per view (LAD + heads, radiance MLP, rasterization), in float32 and
under bfloat16 autocast. Baselines measured in the same process: the GPU's dense matmul rate
(float32 and bfloat16, so the decoder's efficiency is a ratio) and our torch rasterizer on the
same Gaussians beside gsplat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import NearError
from ..models.relightable import RelightableDecoder, stage2_configs
from ..scene import as_float32
from .decoder import bench_slat, orbit, stage2_flops


def device_time(fn: Callable[[], Any], device: torch.device, repeat: int = 5, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` (the GPU synchronised before and after each call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 8192) -> float:
    """Dense ``n x n x n`` matmul FLOP/s in ``dtype`` (the efficiency baseline)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / device_time(lambda: a @ b, device, repeat=10, warmup=3)


def run(quick: bool = False) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise NearError(
            "near bench decoder-gpu needs a CUDA device (an NVIDIA GPU and a CUDA build of torch); "
            "on a GPU machine run tools/gpu_check.sh."
        )
    report = measure("cuda", "near-paper", size=256 if quick else 512, target=4000 if quick else 20_000)
    report["meta"]["command"] += " --quick" if quick else ""
    return report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ViewTimer:
    """Times the stage-2 ``model`` on ``device`` for one camera (``vm [1, 4, 4]``, ``K [1, 3, 3]``,
    ``size``² pixels): medians of ``repeat`` synchronised calls."""

    model: RelightableDecoder
    device: torch.device
    vm: torch.Tensor
    K: torch.Tensor
    size: int
    repeat: int = 5

    def timed(self, fn: Callable[[], Any], n: int | None = None) -> float:
        return device_time(fn, self.device, repeat=self.repeat if n is None else n)

    def frame(self, asset: Any, light: Any, autocast: bool) -> Any:
        """One view as the engine draws it: networks (autocast), then float32 Gaussians rasterized."""
        model, vm = self.model, self.vm
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            g = model.gaussians(asset, light, vm)
            g.radiance = model.radiance(g, light, vm)
        return model.render_gaussians(as_float32(g), vm, self.K, self.size, self.size)

    def stages(
        self, slat: Any, env: torch.Tensor, autocast: bool
    ) -> tuple[dict[str, float], tuple[Any, Any]]:
        """Seconds per asset, per lighting, per view (LAD + heads; whole frame) with or without
        bfloat16 autocast, and the (asset, lighting) caches it made."""
        model, vm = self.model, self.vm
        with torch.no_grad():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                t_asset = self.timed(lambda: model.encode_asset(slat), 3)
                t_light = self.timed(lambda: model.encode_lighting(env), 3)
                asset, light = model.encode_asset(slat), model.encode_lighting(env)
                t_lad = self.timed(lambda a=asset, li=light: model.gaussians(a, li, vm))
            t_view = self.timed(lambda a=asset, li=light, ac=autocast: self.frame(a, li, ac))
        return {"asset": t_asset, "light": t_light, "lad": t_lad, "view": t_view}, (asset, light)

    def rasterizers(self, asset: Any, light: Any, fast: str) -> dict[str, float]:
        """Seconds to rasterize the same float32 Gaussians with ``fast`` and with our torch backend."""
        model, vm = self.model, self.vm
        with torch.no_grad():
            g = model.gaussians(asset, light, vm)
            g.radiance = model.radiance(g, light, vm)
            times = {}
            for backend, n in ((fast, 3), ("torch", 1)):  # one call of ours: it is the slow baseline
                model.backend = backend
                times[backend] = device_time(
                    lambda: model.render_gaussians(g, vm, self.K, self.size, self.size),
                    self.device,
                    n,
                    warmup=1,
                )
            model.backend = fast
        return times


def _precision_rows(
    precision: str, t: dict[str, float], flops: dict[str, int], rate: float, size: int
) -> list[list[Any]]:
    """Latency rows of one precision: what, ms, % of the matmul rate (or "")."""
    return [
        [
            precision,
            "per asset (IAD + LAD cache)",
            t["asset"] * 1e3,
            100 * flops["per_asset"] / t["asset"] / rate,
        ],
        [precision, "per lighting (tokenizer 512² + K/V)", t["light"] * 1e3, ""],
        [
            precision,
            "per view: LAD + heads",
            t["lad"] * 1e3,
            100 * flops["per_view_decoder"] / t["lad"] / rate,
        ],
        [precision, f"per view: whole frame {size}² (LAD, radiance, 2 passes)", t["view"] * 1e3, ""],
    ]


def _summary(
    config: str, name: str, fast: str, voxels: int, gaussians: int, size: int,
    per_view: dict[str, float], rates: dict[str, float], raster: dict[str, float],
) -> list[str]:  # fmt: skip
    """The report's summary sentences."""
    return [
        f"{config} stage 2 (random weights), {voxels} voxels ({gaussians} Gaussians), {size}² views, "
        f"{name}: a whole frame takes {per_view['fp32'] * 1e3:.1f} ms in float32 "
        f"({1 / per_view['fp32']:.1f} FPS) and {per_view['bf16'] * 1e3:.1f} ms under bfloat16 autocast "
        f"({1 / per_view['bf16']:.1f} FPS); the paper reports 30 FPS.",
        f"Baselines in the same process: dense matmul {rates['fp32'] / 1e12:.1f} TFLOP/s (float32, no TF32) and "
        f"{rates['bf16'] / 1e12:.0f} TFLOP/s (bfloat16); {fast} rasterizes {raster['torch'] / raster[fast]:.1f}x "
        "as fast as our torch rasterizer on the same Gaussians.",
    ]


def measure(device: str, config: str, size: int, target: int, repeat: int = 5) -> dict[str, Any]:
    """The report of :func:`run` for ``config`` on ``device`` (``"cpu"`` serves to try the code)."""
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here
    dev = torch.device(device)
    fast = "gsplat" if dev.type == "cuda" else "torch"
    slat = bench_slat(target).to(dev)
    voxels = len(slat)
    cfg = stage2_configs(config)
    model = RelightableDecoder.from_configs(cfg, backend=fast).to(dev).eval()
    env = torch.randn(1, 9, 512, 512, device=dev)
    vms, Ks = (t.to(dev) for t in orbit(4, size))
    timer = ViewTimer(model, dev, vms[:1], Ks[:1], size, repeat)
    small = dev.type != "cuda"
    rates = {"fp32": matmul_rate(torch.float32, dev, 512 if small else 8192),
             "bf16": matmul_rate(torch.bfloat16, dev, 512 if small else 8192)}  # fmt: skip
    flops = stage2_flops(cfg, slat.cpu(), (512, 512))

    rows, per_view, caches = [], {}, {}
    for precision, autocast in (("fp32", False), ("bf16", True)):
        t, caches[precision] = timer.stages(slat, env, autocast)
        per_view[precision] = t["view"]
        rows += _precision_rows(precision, t, flops, rates[precision], size)
    raster = timer.rasterizers(*caches["fp32"], fast)
    rows += [
        ["fp32", f"rasterization {size}², light + base passes, {fast}", raster[fast] * 1e3, ""],
        ["fp32", f"rasterization {size}², same Gaussians, our torch rasterizer", raster["torch"] * 1e3, ""],
    ]
    gaussians = voxels * cfg["renderer"]["args"]["representation_config"]["num_gaussians"]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return {
        "title": f"Stage-2 decoder at the paper's size on a GPU ({config}, {fast})",
        "summary": _summary(config, name, fast, voxels, gaussians, size, per_view, rates, raster),
        "tables": [
            {
                "name": "Latency",
                "columns": ["precision", "what", "ms", "% of matmul rate"],
                "rows": rows,
            }
        ],
        "meta": {
            "voxels": voxels,
            "gaussians": gaussians,
            "image": f"{size}x{size}",
            "matmul_tflops": {k: round(v / 1e12, 2) for k, v in rates.items()},
            "flops_per_view_decoder": flops["per_view_decoder"],
            "command": "python -m near_blender.cli bench decoder-gpu --out benchmarks",
        },
    }
