"""Rasterizer benchmark: the torch backend of ``rasterize`` against a dense brute-force baseline.

Scene ("asset-like"): N Gaussians on a sphere shell of radius 0.4 m (radial jitter 1 cm), sized so
that every surface point is covered by ~8 Gaussians (mean scale ``sqrt(8 A / (pi N))``, per-axis
log-normal anisotropy), random rotations, opacity U(0.2, 1), RGB features. Seen by an orbit camera
at 2 m with a 40 degree field of view (the object fills ~55 % of the frame), as in the paper's
renders. More Gaussians means finer ones, as for a real asset (a TRELLIS-size asset is ~640k).

Columns:

* forward: ``torch.no_grad()`` render (inference: F12, viewport); forward+backward: render with
  gradients w.r.t. means, quats, scales, opacities, features, then ``backward()`` of a scalar loss;
  median (and min) of repeats after a warm-up;
* peak MiB: extra resident memory of one call, measured in a fresh process (VmHWM);
* baseline: a dense brute-force torch rasterizer run in the same command (every pixel against every
  Gaussian in depth order, chunked, the same alpha/transmittance rules, no tiles or culling). Its
  cost is exactly linear in N, so where N x pixels exceeds the measuring budget it is timed on the
  first N' Gaussians and scaled by N / N' (column "baseline on N'").
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..render import rasterize
from ..render._projection import project_gaussians
from ..render._threads import available_threads, single_threaded
from ..render.camera import orbit_camera
from . import run_in_spawned_process

SIZES = [10_000, 100_000, 640_000]
RESOLUTIONS = [128, 256, 512]
TARGET = (100_000, 256)  # the acceptance point


def asset_scene(n: int, seed: int = 0, channels: int = 3) -> dict[str, torch.Tensor]:
    """The benchmark scene (see the module docstring), float32 CPU tensors."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    radius = 0.4
    means = d * (radius + 0.01 * torch.randn(n, 1, generator=g))
    s = math.sqrt(8.0 * 4 * math.pi * radius**2 / (math.pi * n))
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),
        "scales": s * torch.exp(0.5 * torch.randn(n, 3, generator=g)),
        "opacities": 0.2 + 0.8 * torch.rand(n, generator=g),
        "features": torch.rand(n, channels, generator=g),
    }


def camera(res: int) -> tuple[torch.Tensor, torch.Tensor]:
    cam = orbit_camera(30.0, 20.0, 2.0, 40.0, res, res)
    return torch.tensor(cam.viewmat, dtype=torch.float32)[None], torch.tensor(cam.K, dtype=torch.float32)[
        None
    ]


def _times(fn: Any, repeat: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts[0]


def _forward(scene: dict[str, torch.Tensor], res: int) -> None:
    vm, K = camera(res)
    with torch.no_grad():
        rasterize(**scene, viewmats=vm, Ks=K, width=res, height=res, backend="torch")


def _forward_backward(scene: dict[str, torch.Tensor], res: int) -> None:
    vm, K = camera(res)
    leaves = {k: v.detach().requires_grad_(True) for k, v in scene.items()}
    c, a, d = rasterize(**leaves, viewmats=vm, Ks=K, width=res, height=res, backend="torch")
    (c.square().sum() + a.sum() + 0.1 * d.sum()).backward()


# ---------------------------------------------------------------------------------------------
# Dense brute-force baseline
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def dense_rasterize(scene: dict[str, torch.Tensor], res: int, px_chunk: int = 512, g_chunk: int = 512) -> Any:
    """Every pixel against every visible Gaussian (depth sorted), chunked; returns features [H, W, D].

    Pixel chunks are shared by as many threads as torch uses, each op single-threaded: the same
    parallelism as the rasterizer's compositing workers.
    """
    vm, K = camera(res)
    p = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], vm, K, res, res, 0.01, 1e10
    )
    order = torch.sort(p.depths, stable=True).indices
    mx, my = p.means2d[order, 0], p.means2d[order, 1]
    a, b, c = p.conics[order].unbind(-1)
    op = p.opacities[order]
    f = torch.cat([scene["features"][p.gid[order]], p.depths[order, None]], 1)
    ys, xs = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    out = torch.zeros(res * res, f.shape[1])

    def chunk(p0: int) -> None:
        x, y = xs[p0 : p0 + px_chunk, None], ys[p0 : p0 + px_chunk, None]
        T = torch.ones(x.shape[0], 1)
        for g0 in range(0, mx.shape[0], g_chunk):
            sl = slice(g0, g0 + g_chunk)
            dx, dy = mx[None, sl] - x, my[None, sl] - y
            power = 0.5 * (a[sl] * dx * dx + c[sl] * dy * dy) + b[sl] * dx * dy
            alpha = torch.clamp_max(op[sl] * torch.exp(-power), 0.999)
            alpha = alpha * (alpha >= 1 / 255)
            t_after = T * torch.cumprod(1 - alpha, 1)
            w = alpha * t_after / (1 - alpha) * (t_after > 1e-4)
            out[p0 : p0 + px_chunk] += w @ f[sl]
            T = torch.where(t_after[:, -1:] > 1e-4, t_after[:, -1:], 0.0)

    threads = available_threads()
    with (
        single_threaded(),
        ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as ex,
    ):
        list(ex.map(chunk, range(0, res * res, px_chunk)))
    return out.view(res, res, -1)


def _baseline(scene: dict[str, torch.Tensor], res: int, budget: float) -> tuple[float, int]:
    """(seconds for all N, N' actually measured) for the dense forward."""
    n = scene["means"].shape[0]
    n_sub = int(min(n, max(1000, budget // (res * res))))
    sub = {k: v[:n_sub] for k, v in scene.items()}
    t0 = time.perf_counter()
    dense_rasterize(sub, res)
    return (time.perf_counter() - t0) * n / n_sub, n_sub


# ---------------------------------------------------------------------------------------------
# Peak memory (fresh process per measurement)
# ---------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def _peak_child(n: int, res: int, backward: bool, queue: Any) -> None:
    import ctypes

    scene = asset_scene(n)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM
        start = _status_kib("VmRSS")
        (_forward_backward if backward else _forward)(scene, res)
        queue.put((_status_kib("VmHWM") - start) / 1024.0)
    except OSError:  # not Linux
        queue.put(float("nan"))


def peak_mib(n: int, res: int, backward: bool) -> float:
    """Peak extra resident memory (MiB) of one call, in a freshly spawned process."""
    return run_in_spawned_process(_peak_child, (n, res, backward), timeout=600)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    configs = [(10_000, 128), TARGET] if quick else [(n, r) for n in SIZES for r in RESOLUTIONS]
    repeat = 2 if quick else 3
    budget = 2e8 if quick else 4e8  # dense (Gaussian, pixel) evaluations actually timed
    load_before = os.getloadavg()[0]
    rows, by = [], {}
    for n, res in configs:
        scene = asset_scene(n)
        fwd, fwd_min = _times(lambda scene=scene, res=res: _forward(scene, res), repeat)
        fb, fb_min = _times(lambda scene=scene, res=res: _forward_backward(scene, res), repeat)
        exact = (n, res) == TARGET and not quick
        base, n_sub = _baseline(scene, res, float(n * res * res) if exact else budget)
        mem_f, mem_fb = peak_mib(n, res, False), peak_mib(n, res, True)
        by[(n, res)] = (fwd, fb, base)
        rows.append([n, f"{res}²", fwd, fwd_min, fb, fb_min, mem_f, mem_fb, base, n_sub, base / fwd])
        print(f"  N={n} {res}²: fwd {fwd:.3f} s, fwd+bwd {fb:.3f} s, dense {base:.1f} s", flush=True)

    fwd, fb, base = by[TARGET]
    ok = lambda cond: "met" if cond else "NOT met"  # noqa: E731
    summary = [
        f"torch backend, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(compositing workers; each op single-threaded), load average {load_before:.2f} at start.",
        f"Target 100k Gaussians at 256²: forward {fwd:.3f} s (< 1.0 s: {ok(fwd < 1.0)}), "
        f"forward+backward {fb:.3f} s (< 3 s: {ok(fb < 3.0)}), {base / fwd:.0f}x faster than the dense "
        f"baseline ({base:.1f} s; >= 20x: {ok(base / fwd >= 20)}).",
        "Times are medians (min beside them); the machine is shared, so absolute times vary with its "
        "load while the baseline ratio is measured in the same run.",
    ]
    if quick:
        summary.append("Quick run: reduced sizes, baseline extrapolated from small subsets.")
    return {
        "title": "Rasterizer (torch backend) vs dense brute force",
        "summary": summary,
        "tables": [
            {
                "name": "Asset-like scene, one camera, 3 feature channels + alpha + depth",
                "columns": [
                    "N",
                    "image",
                    "forward (s)",
                    "min",
                    "fwd+bwd (s)",
                    "min",
                    "peak MiB fwd",
                    "peak MiB fwd+bwd",
                    "dense baseline fwd (s)",
                    "baseline on N'",
                    "speed-up (fwd)",
                ],  # fmt: skip
                "rows": rows,
            }
        ],
        "meta": {
            "quick": quick,
            "load_average_1min_start": round(load_before, 2),
            "load_average_1min_end": round(os.getloadavg()[0], 2),
        },
    }
