"""Benchmarks: one module per area, each with ``run(quick: bool) -> dict`` returning a report.

``near bench NAME`` (or ``all``) runs them and writes ``benchmarks/NAME.json`` and
``benchmarks/NAME.md`` (the README quotes the markdown). Timings are always reported next to a
baseline measured in the same process, as a ratio, because these machines are noisy.

A report is a dict: ``{"title": str, "summary": [str, ...], "tables": [{"name", "columns", "rows"}],
"meta": {...}}``.
"""

from __future__ import annotations

import importlib
import platform
import time
from collections.abc import Callable
from typing import Any

# name -> module under near_blender.bench
BENCHMARKS: dict[str, str] = {
    "raster": "raster",
    "sparse": "sparse",
    "decoder": "decoder",
    "datagen": "datagen",
    "engine": "engine",
    "coverage": "coverage",
    "stage1": "stage1",
    "viewport": "viewport",
    "world": "world",
    "bigframe": "bigframe",
    "camera-fit": "camera_fit",
    "bake": "bake",
    "decoder-gpu": "decoder_gpu",
}
# benchmarks that need a CUDA device: ``all`` skips them on a machine without one
NEEDS_CUDA: frozenset[str] = frozenset({"decoder-gpu"})


def machine_info() -> dict[str, Any]:
    import os

    import torch

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def timeit(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def run_in_spawned_process(target: Callable[..., None], args: tuple, timeout: float = 600) -> float:
    """Run ``target(*args, queue)`` in a freshly spawned process (glibc returning freed memory to
    the OS, so resident-memory peaks are the call's own) and return the float it puts on the queue."""
    import multiprocessing as mp
    import os

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed tensors go back to the OS
    try:
        proc = ctx.Process(target=target, args=(*args, q))
        proc.start()
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old
    try:
        return float(q.get(timeout=timeout))
    finally:
        proc.join()


def load(name: str):
    return importlib.import_module(f"{__package__}.{BENCHMARKS[name]}")


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report.get('title', 'Benchmark')}", ""]
    for s in report.get("summary", []):
        lines.append(f"- {s}")
    if report.get("summary"):
        lines.append("")
    for t in report.get("tables", []):
        lines += [f"## {t['name']}", ""]
        cols = t["columns"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for row in t["rows"]:
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
        lines.append("")
    meta = report.get("meta", {})
    if meta:
        lines.append("Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
        lines.append("")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)
