"""How much memory a frame needs, how much the machine has, and the refusal when it cannot fit.

A NeAR F12 holds two things that grow with the frame: Blender's render result (float32, one buffer
per channel of every pass the view layer writes, for the whole frame) and NeAR's working set, which
tiling (``engine/tiles.py``) bounds to one padded tile. Everything else (the model, the asset's
Gaussians) is already resident before the frame starts. Measured at 8000² (``near bench
bigframe``): the result buffer is the floor, NeAR's tiles about 0.16 GB.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import NearError

RESULT_BYTES_PER_CHANNEL = 4  # float32 per pixel per channel in Blender's render result
WORKING_BYTES_PER_PIXEL = 150  # NeAR's per-pixel working set while rasterizing a tile (measured ~120)
HEADROOM = 1.1  # ask for 10 % more than the estimate


def frame_bytes(width: int, height: int, channels: int, tile: int) -> int:
    """Bytes a ``width x height`` frame adds: Blender's result for ``channels`` float32 channels plus
    NeAR's working set for a tile of at most ``tile`` pixels per side (margins included)."""
    tile_px = min(width, tile) * min(height, tile)
    return width * height * channels * RESULT_BYTES_PER_CHANNEL + tile_px * WORKING_BYTES_PER_PIXEL


def _cgroup_free() -> int | None:
    """Bytes left under a cgroup v2 memory limit (containers, CI), or None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory the process can still get (bytes), or None when this platform does not say."""
    free: int | None = None
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError):
            free = None
        limit = _cgroup_free()
        if limit is not None:
            free = limit if free is None else min(free, limit)
    elif sys.platform == "win32":
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]  # fmt: skip

        status = MemoryStatus()
        status.dwLength = ctypes.sizeof(MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            free = int(status.ullAvailPhys)
    elif hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return free


def check_frame_fits(
    width: int, height: int, channels: int, tile: int, passes_hint: str, size_hint: str
) -> None:
    """Refuse, before anything is allocated, a frame whose estimate exceeds the available memory.

    ``passes_hint`` / ``size_hint``: where the user turns passes off and lowers the size, in the
    interface's words (a menu path in Blender, a flag on the CLI)."""
    free = available_bytes()
    if free is None:
        return
    need = int(frame_bytes(width, height, channels, tile) * HEADROOM)
    if need <= free:
        return
    gb = 1024**3
    result = width * height * channels * RESULT_BYTES_PER_CHANNEL / gb
    raise NearError(
        f"A {width}x{height} frame needs about {need / gb:.1f} GB ({result:.1f} GB of it for the {channels} float32 "
        f"channels of its passes) but only {free / gb:.1f} GB is free. Turn off NeAR passes you do not need "
        f"({passes_hint}) or render smaller ({size_hint})."
    )
