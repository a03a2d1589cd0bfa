"""Sparse stack benchmark: tiny SLAT-flow forward time/memory on 5k / 20k voxels, conv backends,
and parameter counts of every config.

Voxel sets are shells of a sphere in the 64³ grid (surface-like, like real SLATs). Times are
medians; ``ratio`` columns divide by a dense 1024² fp32 matmul measured in the same process, and
the spconv/torch columns compare the two conv backends on the same input in the same run.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..models.image_encoder import DinoV2Encoder, PatchImageEncoder, dinov2_vitl14_reg_config
from ..models.param_count import count_parameters
from ..models.slat_flow import SLatFlowModel
from ..sparse import SparseTensor, SubMConv3d, conv_backend, spconv_available
from . import run_in_spawned_process, timeit


def shell_voxels(n: int, res: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` voxels (x, y, z) of a thick sphere shell centred in the grid (int32 [n, 3])."""
    g = torch.Generator().manual_seed(seed)
    ax = torch.arange(res, dtype=torch.float32) + 0.5
    xx, yy, zz = torch.meshgrid(ax, ax, ax, indexing="ij")
    r = ((xx - res / 2) ** 2 + (yy - res / 2) ** 2 + (zz - res / 2) ** 2).sqrt()
    for width in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0):
        mask = (r - res * 0.4).abs() < width
        if int(mask.sum()) >= n:
            break
    coords = mask.nonzero().to(torch.int32)
    keep = torch.randperm(coords.shape[0], generator=g)[:n].sort().values
    return coords[keep]


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def _forward_peak_child(n: int, backend: str, queue: Any) -> None:
    """In a fresh process: peak resident memory (MiB) above the pre-forward level for one forward.

    The parent starts this process with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors go
    back to the OS; the kernel's high-water mark (VmHWM) is reset just before the forward.
    """
    import ctypes

    torch.manual_seed(0)
    model = SLatFlowModel(**SLatFlowModel.tiny_config()).eval()
    coords, feats = shell_voxels(n), torch.randn(n, 8)
    cond = torch.randn(1, 64, model.cond_channels)
    x = SparseTensor.from_list([coords], [feats])
    spconv_available()  # import spconv (if present) outside the measurement
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM
        start = _status_kib("VmRSS")
        with torch.no_grad(), conv_backend(backend):
            model(x, torch.tensor([500.0]), cond)
        queue.put((_status_kib("VmHWM") - start) / 1024.0)
    except OSError:  # not Linux: no per-call peak available
        queue.put(float("nan"))


def forward_peak_mib(n: int, backend: str) -> float:
    """Peak extra resident memory of one forward, measured in a freshly spawned process."""
    return run_in_spawned_process(_forward_peak_child, (n, backend), timeout=300)


def _baseline() -> float:
    a = torch.randn(1024, 1024)
    return timeit(lambda: a @ a, repeat=5)


def run(quick: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    sizes = [1000, 4000] if quick else [5000, 20000]
    repeat = 1 if quick else 3
    base = _baseline()
    backends = ["torch"] + (["spconv"] if spconv_available() else [])
    model = SLatFlowModel(**SLatFlowModel.tiny_config()).eval()
    for p in model.parameters():  # non-trivial weights (the TRELLIS init zeroes the output path)
        torch.nn.init.normal_(p, std=0.02)
    cond = torch.randn(1, 64, model.cond_channels)

    fwd_rows, conv_rows = [], []
    for n in sizes:
        coords = shell_voxels(n)
        feats = torch.randn(n, 8)
        times: dict[str, float] = {}
        for be in backends:

            def fwd(be: str = be, coords: torch.Tensor = coords, feats: torch.Tensor = feats) -> None:
                x = SparseTensor.from_list([coords], [feats])  # fresh caches: neighbour maps included
                with torch.no_grad(), conv_backend(be):
                    model(x, torch.tensor([500.0]), cond)

            times[be] = timeit(fwd, repeat=repeat)
            fwd_rows.append([n, be, times[be], times[be] / base, forward_peak_mib(n, be)])
        conv = SubMConv3d(64, 64).eval()
        x = SparseTensor.from_list([coords], [torch.randn(n, 64)])
        ct: dict[str, float] = {}
        for be in backends:
            with torch.no_grad(), conv_backend(be):
                conv(x)  # neighbour tables cached on x, as inside a forward pass
                ct[be] = timeit(lambda conv=conv, x=x: conv(x), repeat=max(3, repeat))
        ratio = ct["spconv"] / ct["torch"] if "spconv" in ct else float("nan")
        conv_rows.append([n, ct["torch"], ct.get("spconv", float("nan")), ratio])

    with torch.device("meta"):
        large = SLatFlowModel(**SLatFlowModel.paper_config())
        dino = DinoV2Encoder(**dinov2_vitl14_reg_config())
    params = [
        ["SLatFlowModel trellis-image-large", count_parameters(large)],
        ["SLatFlowModel tiny", count_parameters(model)],
        ["DINOv2 ViT-L/14-reg (image condition)", count_parameters(dino)],
        ["PatchImageEncoder (CPU default)", count_parameters(PatchImageEncoder())],
    ]
    fwd_by = {(r[0], r[1]): r[2] for r in fwd_rows}
    summary = [
        f"Tiny SLAT flow forward ({SLatFlowModel.tiny_config()['model_channels']} wide, "
        f"{SLatFlowModel.tiny_config()['num_blocks']} blocks), CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; baseline 1024² fp32 matmul = {base * 1e3:.2f} ms.",
    ]
    for n in sizes:
        s = f"{n} voxels: torch conv backend {fwd_by[(n, 'torch')]:.3f} s"
        if (n, "spconv") in fwd_by:
            s += f", spconv {fwd_by[(n, 'spconv')]:.3f} s"
        summary.append(s + " per forward.")
    summary.append(f"trellis-image-large SLAT flow: {count_parameters(large) / 1e6:.1f}M parameters.")
    return {
        "title": "Sparse stack (SLAT flow, sparse conv, attention)",
        "summary": summary,
        "tables": [
            {
                "name": "Tiny SLAT flow forward (one asset, CPU)",
                "columns": ["voxels", "conv backend", "time (s)", "time / baseline", "peak extra RSS (MiB)"],
                "rows": fwd_rows,
            },
            {
                "name": "Submanifold conv 64->64 (cached neighbour tables)",
                "columns": ["voxels", "torch (s)", "spconv (s)", "spconv / torch"],
                "rows": conv_rows,
            },
            {"name": "Parameter counts", "columns": ["model", "parameters"], "rows": params},
        ],
        "meta": {
            "quick": quick,
            "spconv": spconv_available(),
            "baseline_s": base,
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }
