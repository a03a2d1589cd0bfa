"""The view files of a dataset: one EXR per render holding every pass of that render.

A view file is a single-part OpenEXR, half float, ZIP, with these channels (the set of a view
decides which are present, see :data:`SET_PASSES`):

=================  ==========================  ===============================================
key                channels                    meaning
=================  ==========================  ===============================================
``rgba``           ``R G B A``                 Combined, scene-linear HDR, alpha premultiplied
``depth``          ``depth.Z``                 distance along the optical axis (m), 0 = none
``normal``         ``normal.X/Y/Z``            world-space normal (Blender's Normal pass)
``base_color``     ``base_color.R/G/B``        AOV: the material's base colour (linear)
``roughness``      ``roughness.Y``             AOV: the material's roughness
``metallic``       ``metallic.Y``              AOV: the material's metallic
``shadow``         ``shadow.Y``                see :mod:`near_blender.data.shadow`
``shadow_weight``  ``shadow_weight.Y``         1 where ``shadow`` is defined
=================  ==========================  ===============================================

Passes come from the renderer's pixel filter, so on partially covered edge pixels the colour,
normal and AOV values are coverage-weighted (like the premultiplied colour); use pixels with
alpha close to 1, or divide by alpha, where exact material values matter.

Blender itself writes multilayer EXRs as *multi-part* files (one part per pass, channel names
``ViewLayer.<Pass>.<C>``); :func:`read_blender_passes` reads all parts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import NearError
from ..render.exr import read_exr_channels, write_exr

CHANNELS: dict[str, tuple[str, ...]] = {
    "rgba": ("R", "G", "B", "A"),
    "depth": ("depth.Z",),
    "normal": ("normal.X", "normal.Y", "normal.Z"),
    "base_color": ("base_color.R", "base_color.G", "base_color.B"),
    "roughness": ("roughness.Y",),
    "metallic": ("metallic.Y",),
    "shadow": ("shadow.Y",),
    "shadow_weight": ("shadow_weight.Y",),
}
GBUFFER = ("rgba", "depth", "normal", "base_color", "roughness", "metallic")
SET_PASSES: dict[str, tuple[str, ...]] = {
    "homog": GBUFFER,
    "shaded": ("rgba", "depth", "normal"),
    "cond": ("rgba",),
    "inputs": ("rgba", "depth", "normal"),
    "relit": (*GBUFFER, "shadow", "shadow_weight"),
    "relit_holdout": (*GBUFFER, "shadow", "shadow_weight"),
    "inputs_holdout": (*GBUFFER, "shadow", "shadow_weight"),
}

# Blender pass names (as they appear in its multilayer EXR) of what the generator enables.
AOVS = {"base_color": "COLOR", "roughness": "VALUE", "metallic": "VALUE"}


def read_blender_passes(path: str | os.PathLike[str], layer: str = "ViewLayer") -> dict[str, np.ndarray]:
    """Pass name -> ``[H, W, C]`` float32 from a Blender multilayer (multi-part) EXR."""
    import OpenEXR

    p = Path(path)
    try:
        f = OpenEXR.File(str(p), separate_channels=True)
    except Exception as e:
        raise NearError(f"Cannot read Blender's render output {p} ({e}).") from None
    chans: dict[str, dict[str, np.ndarray]] = {}
    with f:
        for part in f.parts:
            for name, ch in part.channels.items():
                parts = name.split(".")
                if len(parts) < 3 or parts[0] != layer:
                    continue
                pass_name, comp = ".".join(parts[1:-1]), parts[-1]
                chans.setdefault(pass_name, {})[comp] = np.asarray(ch.pixels, dtype=np.float32)
    out = {}
    for pass_name, comps in chans.items():
        order = [c for c in ("R", "G", "B", "A", "X", "Y", "Z", "V") if c in comps] or sorted(comps)
        out[pass_name] = np.stack([comps[c] for c in order], axis=-1)
    if "Combined" not in out:
        raise NearError(f"{p} has no Combined pass (found: {sorted(out)}).")
    return out


def view_from_passes(passes: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Our view dict (keys of :data:`CHANNELS`) from Blender's passes (``shadow`` is added later)."""
    rgba = passes["Combined"]
    alpha = rgba[..., 3]
    view: dict[str, np.ndarray] = {"rgba": rgba}
    if "depth" in keys:
        z = passes["Depth"][..., 0]
        # Background depth is Blender's "infinity" (1e10 in Cycles, ~clip end in EEVEE): write 0.
        view["depth"] = np.where((alpha > 0) & (z < 1e4) & np.isfinite(z), z, 0.0).astype(np.float32)
    if "normal" in keys:
        view["normal"] = passes["Normal"][..., :3]
    for k in ("base_color", "roughness", "metallic"):
        if k in keys:
            a = passes[k]
            view[k] = a[..., :3] if k == "base_color" else a[..., 0]
    return view


def diffuse_light(passes: dict[str, np.ndarray]) -> np.ndarray:
    """The diffuse lighting pass [H, W, 3]: Cycles Direct + Indirect, EEVEE's Diffuse Light."""
    d = passes["Diffuse Direct"][..., :3].copy()
    if "Diffuse Indirect" in passes:
        d += passes["Diffuse Indirect"][..., :3]
    return d


def write_view(path: str | os.PathLike[str], view: dict[str, np.ndarray]) -> None:
    """Write a view dict atomically (half float; channel names of :data:`CHANNELS`)."""
    channels: dict[str, np.ndarray] = {}
    for key, arr in view.items():
        names = CHANNELS[key]
        a = np.asarray(arr, dtype=np.float32)
        a = a[..., None] if a.ndim == 2 else a
        if a.shape[-1] != len(names):
            raise NearError(f"View pass {key!r} needs {len(names)} channels, got {a.shape}.")
        for i, n in enumerate(names):
            channels[n] = a[..., i]
    write_exr(path, channels, half=True)


def read_view(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A view file as a dict: the keys present of :data:`CHANNELS` (``[H, W]`` or ``[H, W, C]``)."""
    ch = read_exr_channels(path)
    out: dict[str, np.ndarray] = {}
    for key, names in CHANNELS.items():
        if all(n in ch for n in names):
            a = np.stack([ch[n] for n in names], axis=-1)
            out[key] = a[..., 0] if len(names) == 1 else a
    if "rgba" not in out:
        raise NearError(f"{path} is not a near-datagen view file (no R, G, B, A channels).")
    return out
