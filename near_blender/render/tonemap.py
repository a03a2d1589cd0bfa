"""View transforms: Blender's AgX and Standard (sRGB), and the plain log transform of the losses.

* numpy inputs go through OpenColorIO with Blender's own config (bundled by ``simple-ocio``), so
  the output is exactly Blender's view transform (display sRGB);
* torch inputs go through a differentiable re-implementation built from the *same* OCIO data: the
  processor's transform chain (matrices, log2 allocation, the 57³ AgX base LUT with tetrahedral
  interpolation, exponents, the sRGB piecewise curve) is read from the config and each step is
  evaluated in torch. Tested against OCIO to < 2e-3 over HDR values 1e-4 .. 1e4.

Inputs are scene-linear Rec.709 ``[..., 3]``; outputs are display-referred, clipped to [0, 1]
unless ``clip=False``. ``log_transform`` is ``log(1 + x)`` (NeAR's HDR L1 loss space, eq. 8).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .. import NearError

View = Literal["AgX", "Standard", "Log"]
_OCIO_VIEWS = ("AgX", "Standard")


def tonemap(x: Any, view: View = "AgX", clip: bool = True) -> Any:
    """Apply a view transform to scene-linear RGB ``[..., 3]`` (numpy -> numpy, torch -> torch)."""
    if view == "Log":
        return log_transform(x)
    if view not in _OCIO_VIEWS:
        raise NearError(f"Unknown view transform {view!r}; use 'AgX', 'Standard' or 'Log'.")
    if _is_torch(x):
        return tonemap_torch(x, view, clip)
    return tonemap_numpy(x, view, clip)


def agx(x: Any, clip: bool = True) -> Any:
    """Blender's AgX (display sRGB): numpy via OCIO, torch differentiable."""
    return tonemap(x, "AgX", clip)


def display_agx(hdr: Any) -> np.ndarray:
    """Premultiplied HDR ``[H, W, 3]`` -> AgX display image over black, float32 in [0, 1] (NaN -> 0,
    +inf -> 1e4, negatives -> 0): the image ``near eval`` and the glossy-weight fit score."""
    x = np.nan_to_num(np.asarray(hdr, np.float32)[..., :3], nan=0.0, posinf=1e4, neginf=0.0)
    return np.asarray(agx(np.maximum(x, 0.0)), np.float32)


def standard(x: Any, clip: bool = True) -> Any:
    """Blender's "Standard" view: the sRGB piecewise encoding of linear Rec.709."""
    return tonemap(x, "Standard", clip)


def log_transform(x: Any) -> Any:
    """``log(1 + max(x, 0))`` elementwise (numpy or torch; differentiable for x > 0)."""
    if _is_torch(x):
        import torch

        return torch.log1p(torch.clamp(x, min=0))
    return np.log1p(np.maximum(np.asarray(x), 0))


# ---------------------------------------------------------------------------------------------
# numpy: OpenColorIO itself
# ---------------------------------------------------------------------------------------------


@functools.cache
def _processor(view: str) -> Any:
    try:
        import PyOpenColorIO as OCIO
        from simple_ocio import ToneMapper
    except ImportError as e:  # pragma: no cover - declared dependency
        raise NearError(
            f"Tone mapping needs simple-ocio and opencolorio ({e}); install them with pip."
        ) from None
    tm = ToneMapper(view=view)
    return OCIO, tm.config, tm.config.getProcessor(tm.xform)


def tonemap_numpy(x: Any, view: str = "AgX", clip: bool = True) -> np.ndarray:
    """OCIO view transform of float ``[..., 3]`` (float32 result, Blender's exact pipeline)."""
    arr = np.array(x, dtype=np.float32, copy=True, order="C")
    if arr.ndim < 1 or arr.shape[-1] != 3:
        raise NearError(f"tonemap expects RGB values [..., 3], got shape {arr.shape}.")
    _, _, proc = _processor(view)
    flat = np.ascontiguousarray(arr.reshape(-1, 3))
    proc.getDefaultCPUProcessor().applyRGB(flat)
    out = flat.reshape(arr.shape)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


# ---------------------------------------------------------------------------------------------
# torch: the same OCIO chain, differentiable
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    kind: str  # "affine" | "log" | "lut3d" | "pow" | "moncurve_inv" | "moncurve_fwd"
    data: Any


def tonemap_torch(x: Any, view: str = "AgX", clip: bool = True) -> Any:
    """Differentiable view transform of a torch tensor ``[..., 3]`` (same dtype/device)."""
    import torch

    from ._threads import serial

    if x.shape[-1] != 3:
        raise NearError(f"tonemap expects RGB values [..., 3], got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        x = x.float()
    ops = _ops(view)

    def chain(y: Any) -> Any:
        for op in ops:
            y = _apply(op, y)
        return torch.clamp(y, 0.0, 1.0) if clip else y

    return serial(chain, x)


@functools.cache
def _ops(view: str) -> tuple[_Op, ...]:
    """The processor's transform chain as simple ops (consecutive matrices merged)."""
    OCIO, _, proc = _processor(view)
    ops: list[_Op] = []
    for t in proc.createGroupTransform():
        forward = t.getDirection() == OCIO.TransformDirection.TRANSFORM_DIR_FORWARD
        if isinstance(t, OCIO.MatrixTransform):
            A = np.eye(4)
            A[:, :] = np.array(t.getMatrix(), dtype=np.float64).reshape(4, 4)
            A[:, 3] += np.array(t.getOffset(), dtype=np.float64)
            if not forward:
                A = np.linalg.inv(A)
            if ops and ops[-1].kind == "affine":
                A = A @ ops[-1].data
                ops[-1] = _Op("affine", A)
            else:
                ops.append(_Op("affine", A))
        elif isinstance(t, OCIO.LogTransform) and forward:
            ops.append(_Op("log", float(t.getBase())))
        elif isinstance(t, OCIO.Lut3DTransform) and forward:
            n = t.getGridSize()
            lut = np.asarray(t.getData(), dtype=np.float64).reshape(n, n, n, 3)  # [r, g, b, c]
            ops.append(_Op("lut3d", lut))
        elif isinstance(t, OCIO.ExponentTransform) and forward:
            g = t.getValue()[:3]
            style = t.getNegativeStyle()
            if len(set(g)) != 1 or style != OCIO.NegativeStyle.NEGATIVE_CLAMP:
                raise NearError(f"Unsupported OCIO exponent {g} / {style} in view {view!r}.")
            ops.append(_Op("pow", float(g[0])))
        elif isinstance(t, OCIO.ExponentWithLinearTransform):
            gam, off = t.getGamma()[:3], t.getOffset()[:3]
            if len(set(gam)) != 1 or len(set(off)) != 1:
                raise NearError(f"Unsupported per-channel OCIO curve in view {view!r}.")
            kind = "moncurve_fwd" if forward else "moncurve_inv"
            ops.append(_Op(kind, _moncurve_params(float(gam[0]), float(off[0]))))
        else:
            raise NearError(f"The torch tone mapper does not support {type(t).__name__} (view {view!r}).")
    return tuple(ops)


def _moncurve_params(gamma: float, offset: float) -> tuple[float, float, float, float]:
    """OCIO's monitor curve: (gamma, offset, encoded break point, linear slope)."""
    brk = offset / (gamma - 1.0)  # encoded-domain break point
    slope = ((1.0 + offset) / gamma) ** gamma * ((gamma - 1.0) / offset) ** (gamma - 1.0)
    # slope maps linear -> encoded: encoded = linear * slope below the break
    return gamma, offset, brk, slope


def _apply(op: _Op, y: Any) -> Any:
    import torch

    if op.kind == "affine":
        A = torch.as_tensor(op.data, dtype=y.dtype, device=y.device)
        return y @ A[:3, :3].T + A[:3, 3]
    if op.kind == "log":
        tiny = float(np.finfo(np.float32).tiny)  # OCIO clamps to FLT_MIN before the log
        return torch.log(torch.clamp(y, min=tiny)) / math.log(op.data)
    if op.kind == "pow":
        return torch.pow(torch.clamp(y, min=0.0), op.data)
    if op.kind == "moncurve_inv":  # linear -> encoded (e.g. the sRGB OETF)
        gamma, offset, brk, slope = op.data
        lin_brk = brk / slope
        hi = (1.0 + offset) * torch.pow(torch.clamp(y, min=lin_brk), 1.0 / gamma) - offset
        return torch.where(y <= lin_brk, y * slope, hi)
    if op.kind == "moncurve_fwd":  # encoded -> linear
        gamma, offset, brk, slope = op.data
        hi = torch.pow((torch.clamp(y, min=brk) + offset) / (1.0 + offset), gamma)
        return torch.where(y <= brk, y / slope, hi)
    if op.kind == "lut3d":
        return _lut3d_tetrahedral(y, _lut_tensor(op, y.dtype, y.device))
    raise AssertionError(op.kind)  # pragma: no cover


_LUT_CACHE: dict[tuple[int, Any, Any], Any] = {}


def _lut_tensor(op: _Op, dtype: Any, device: Any) -> Any:
    import torch

    key = (id(op), dtype, device)
    if key not in _LUT_CACHE:
        n = op.data.shape[0]
        _LUT_CACHE[key] = torch.as_tensor(op.data.reshape(n * n * n, 3), dtype=dtype, device=device)
    return _LUT_CACHE[key]


def _lut3d_tetrahedral(x: Any, lut: Any) -> Any:
    """Tetrahedral interpolation of a flat [n³, 3] LUT (index ((r n + g) n + b)) at x [..., 3] in
    [0, 1] (clamped, as OCIO does). Piecewise linear, so differentiable almost everywhere."""
    import torch

    n = round(lut.shape[0] ** (1.0 / 3.0))
    s = torch.clamp(x, 0.0, 1.0) * (n - 1)
    base = torch.clamp(torch.floor(s.detach()), max=n - 2)
    f = s - base  # fractions in [0, 1]
    bi = base.to(torch.int64)
    stride = torch.tensor([n * n, n, 1], device=x.device)
    i000 = (bi * stride).sum(-1)
    # walk from the base corner along the axes in decreasing order of their fraction
    fs, axis = torch.sort(f, dim=-1, descending=True)
    step = stride[axis]  # [..., 3] index steps of the three walk directions
    i1 = i000 + step[..., 0]
    i2 = i1 + step[..., 1]
    i3 = i2 + step[..., 2]
    w0 = 1.0 - fs[..., 0:1]
    w1 = fs[..., 0:1] - fs[..., 1:2]
    w2 = fs[..., 1:2] - fs[..., 2:3]
    w3 = fs[..., 2:3]

    def at(i: Any) -> Any:
        return lut.index_select(0, i.reshape(-1)).reshape(*i.shape, 3)

    return w0 * at(i000) + w1 * at(i1) + w2 * at(i2) + w3 * at(i3)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")
