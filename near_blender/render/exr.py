"""OpenEXR reading and (atomic) writing through the ``OpenEXR`` package.

Images are numpy arrays with row 0 at the top. Channel names follow the EXR convention: ``R``,
``G``, ``B``, ``A`` for a plain image, ``<layer>.<channel>`` in multilayer files (Blender writes
``ViewLayer.Combined.R``, ``ViewLayer.Depth.Z``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..utils.atomic import atomic_path
from .envmap import Environment, validate_radiance


def _open(path: str | os.PathLike[str]) -> Any:
    import OpenEXR

    p = Path(path)
    if not p.is_file():
        raise NearError(f"EXR file not found: {p}")
    try:
        return OpenEXR.File(str(p), separate_channels=True)
    except Exception as e:  # the binding raises plain RuntimeError/Exception on corrupt files
        raise NearError(f"Cannot read {p} as OpenEXR ({e}). Is the file complete and an .exr?") from None


def read_exr_channels(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All channels of all parts: name -> [H, W] float32 (half and uint are converted).

    Blender 5.0 writes multilayer EXRs as multi-part files (one part per pass), so every part is
    read and the channel names (``ViewLayer.Depth.Z``, ...) are merged.
    """
    out: dict[str, np.ndarray] = {}
    with _open(path) as f:
        for part in f.parts:
            for name, ch in part.channels.items():
                out[name] = np.asarray(ch.pixels).astype(np.float32, copy=False)
    return out


def read_exr(path: str | os.PathLike[str], layer: str = "") -> np.ndarray:
    """An RGB(A) image [H, W, 3|4] float32 from a plain or multilayer EXR.

    ``layer`` is the channel prefix (e.g. ``"ViewLayer.Combined"``); an empty ``layer`` reads the
    bare ``R``/``G``/``B``(/``A``) channels, or a single ``Y`` (luminance) channel as grey.
    """
    ch = read_exr_channels(path)
    prefix = f"{layer}." if layer else ""
    names = [f"{prefix}{c}" for c in "RGBA"]
    if all(n in ch for n in names[:3]):
        comps = [ch[n] for n in names[:3]] + ([ch[names[3]]] if names[3] in ch else [])
        return np.stack(comps, axis=-1)
    if f"{prefix}Y" in ch:
        y = ch[f"{prefix}Y"]
        return np.stack([y, y, y], axis=-1)
    raise NearError(
        f"{path} has no {prefix or ''}R/G/B channels (it has: {', '.join(sorted(ch)[:12])}). "
        "Pass the right layer name."
    )


def write_exr(
    path: str | os.PathLike[str],
    channels: dict[str, np.ndarray] | np.ndarray,
    half: bool = True,
    header: dict[str, Any] | None = None,
) -> None:
    """Write an EXR atomically (temp file + rename).

    ``channels`` is either an image ``[H, W, C]`` (C = 1: ``Y``; 3: RGB; 4: RGBA) or a dict of
    channel name -> ``[H, W]`` array (or ``[H, W, C]``, expanded to ``name.R``, ``name.G``, ...).
    Values are stored as half floats by default (as Blender's datasets), float32 with ``half=False``.
    """
    import OpenEXR

    if isinstance(channels, np.ndarray):
        channels = _split_image(channels, "")
    flat: dict[str, np.ndarray] = {}
    for name, arr in channels.items():
        a = np.asarray(arr)
        if a.ndim == 3:
            flat.update(_split_image(a, name))
        elif a.ndim == 2:
            flat[name] = a
        else:
            raise NearError(f"EXR channel {name!r} must be [H, W] or [H, W, C], got {a.shape}.")
    shapes = {a.shape for a in flat.values()}
    if len(shapes) != 1:
        raise NearError(f"All EXR channels must have the same size, got {sorted(shapes)}.")
    dtype = np.float16 if half else np.float32
    data = {k: np.ascontiguousarray(v.astype(dtype)) for k, v in flat.items()}
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    hdr.update(header or {})
    with atomic_path(path) as tmp:
        with OpenEXR.File(hdr, data) as f:
            f.write(str(tmp))


def _split_image(a: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    if a.ndim == 2:
        a = a[..., None]
    C = a.shape[-1]
    names = {1: "Y", 2: "RA", 3: "RGB", 4: "RGBA"}.get(C)
    if names is None:
        names_list = [str(i) for i in range(C)]
    else:
        names_list = list(names) if C > 1 else ["Y"]
    pre = f"{prefix}." if prefix else ""
    return {f"{pre}{n}": a[..., i] for i, n in enumerate(names_list)}


def read_envmap(path: str | os.PathLike[str], strength: float = 1.0, rotation_z: float = 0.0) -> Environment:
    """An :class:`Environment` from an equirect EXR or Radiance ``.hdr`` (validated: 2:1, finite,
    non-negative)."""
    if Path(path).suffix.lower() == ".hdr":
        from .hdr import read_hdr

        img = read_hdr(path)
    else:
        img = read_exr(path)
    rad = validate_radiance(img, f"environment map {Path(path).name}")
    env = Environment(rad, rotation_z, Path(path).stem, {"path": str(path)})
    return env.scaled(strength) if strength != 1.0 else env
