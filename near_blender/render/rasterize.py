"""``rasterize``: the one Gaussian-splatting entry point of the stack (training, F12, viewport, eval).

Use it as ``from near_blender.render import rasterize``.

Contract (gsplat's ``rasterization`` with ``render_mode="RGB+ED"``):

* Gaussians: ``means [N, 3]`` (world, metres), ``quats [N, 4]`` (w, x, y, z; any non-zero length),
  ``scales [N, 3]`` (standard deviations, metres), ``opacities [N]`` (values < 1/255, including
  negative ones, contribute nothing), ``features [N, D]`` or per camera ``[C, N, D]`` (any D >= 1).
* Cameras: ``viewmats [C, 4, 4]`` OpenCV world-to-camera (x right, y down, z forward), ``Ks [C, 3, 3]``
  in pixels with pixel centres at +0.5 (:mod:`near_blender.render.camera`), image ``width x height``.
  ``camera_model="ortho"`` projects ``u = fx x + cx`` (fx in pixels per metre).
* Returns ``(features [C, H, W, D], alphas [C, H, W, 1], depths [C, H, W, 1])``: composited features
  (plus ``(1 - alpha) * background`` when ``backgrounds [C, D]`` (or ``[D]``) is given), accumulated
  opacity, and the expected camera depth ``sum(w z) / sum(w)`` (0 where alpha == 0).

Semantics (gsplat 1.5's CUDA kernels, reproduced exactly by the torch backend): EWA projection of
``R S S^T R^T``; Gaussians whose centre depth is outside ``[near_plane, far_plane]`` are dropped;
``eps2d`` px² added to the 2D covariance (``antialiased`` scales the opacity by the determinant
ratio); extent ``min(3.33, sqrt(2 ln(255 o)))`` sigmas for the 16x16 tile lists; per pixel, in
increasing depth: ``alpha = min(0.999, o exp(-power))``, skipped when < 1/255, and the pixel stops
before the Gaussian that would bring its transmittance to <= 1e-4.

Backends: ``"gsplat"`` (CUDA tensors only), ``"torch"`` (ours; any device, float32 or float64,
differentiable w.r.t. means, quats, scales, opacities, features, viewmats and Ks; the discrete
decisions above are held fixed, as in gsplat), ``"auto"`` (gsplat for float32 CUDA tensors when it
works, else torch). On CPU the torch backend runs its ops on one intra-op thread and composites on
``torch.get_num_threads()`` worker threads (see :mod:`._threads`).
"""

from __future__ import annotations

import math
import sys
import types
import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from .. import NearError
from ._composite import CompositeConfig

Mode = Literal["classic", "antialiased"]
CameraModelName = Literal["pinhole", "ortho"]
Backend = Literal["auto", "gsplat", "torch"]

_MODES = ("classic", "antialiased")
_CAMERA_MODELS = ("pinhole", "ortho")
_BACKENDS = ("auto", "gsplat", "torch")
DEFAULT_EPS2D = 0.3  # px^2: the low-pass added to every 2D covariance (gsplat's default)


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    backgrounds: Tensor | None = None,
    mode: Mode = "classic",
    camera_model: CameraModelName = "pinhole",
    backend: Backend = "auto",
    eps2d: float = DEFAULT_EPS2D,
    config: CompositeConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render N Gaussians into C cameras; see the module docstring for shapes and conventions.

    ``eps2d`` is the low-pass (px²) added to every 2D covariance; ``config`` tunes the torch
    backend's memory/speed trade-off (never its results).
    """
    from ._threads import single_threaded

    with single_threaded():  # validation reductions too: see _threads
        return _rasterize(
            means, quats, scales, opacities, features, viewmats, Ks, width, height, near_plane,
            far_plane, backgrounds, mode, camera_model, backend, eps2d, config,
        )  # fmt: skip


def _rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    backgrounds: Tensor | None,
    mode: str,
    camera_model: str,
    backend: str,
    eps2d: float,
    config: CompositeConfig | None,
) -> tuple[Tensor, Tensor, Tensor]:
    width, height = _check_size(width, height)
    if mode not in _MODES:
        raise NearError(f"Unknown rasterization mode {mode!r}; use 'classic' or 'antialiased'.")
    if camera_model not in _CAMERA_MODELS:
        raise NearError(f"Unknown camera model {camera_model!r}; use 'pinhole' or 'ortho'.")
    if backend not in _BACKENDS:
        raise NearError(f"Unknown rasterization backend {backend!r}; use 'auto', 'gsplat' or 'torch'.")
    near_plane, far_plane, eps2d = float(near_plane), float(far_plane), float(eps2d)
    if not (math.isfinite(near_plane) and math.isfinite(far_plane) and near_plane < far_plane):
        raise NearError(f"Clip range must be finite with near < far, got ({near_plane}, {far_plane}).")
    if not (math.isfinite(eps2d) and eps2d >= 0):
        raise NearError(f"eps2d must be finite and >= 0, got {eps2d}.")
    means, quats, scales, opacities, features, viewmats, Ks, backgrounds = _check_tensors(
        means, quats, scales, opacities, features, viewmats, Ks, backgrounds
    )

    use = _pick_backend(backend, means)
    if use == "gsplat":
        from ._raster_gsplat import mark_failed, rasterize_gsplat

        try:
            return rasterize_gsplat(
                means, quats, scales, opacities, features, viewmats, Ks, width, height,
                near_plane, far_plane, backgrounds, mode, camera_model, eps2d,
            )  # fmt: skip
        except NearError as e:
            if backend == "gsplat":
                raise
            mark_failed(str(e))  # auto: use the torch backend from now on
            warnings.warn(f"{e} Falling back to the torch backend.", RuntimeWarning, stacklevel=3)
    from ._raster_torch import rasterize_torch

    return rasterize_torch(
        means, quats, scales, opacities, features, viewmats, Ks, width, height,
        near_plane, far_plane, backgrounds, mode, camera_model, eps2d, config,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _pick_backend(backend: str, means: Tensor) -> str:
    if backend == "torch":
        return "torch"
    from ._raster_gsplat import gsplat_status

    if backend == "gsplat":
        if means.device.type != "cuda":
            raise NearError(
                "backend='gsplat' needs CUDA tensors, but the Gaussians are on "
                f"{means.device}. Move them to a CUDA device or use backend='torch'."
            )
        if means.dtype != torch.float32:
            raise NearError(f"backend='gsplat' needs float32 tensors, got {means.dtype}.")
        reason = gsplat_status()
        if reason is not None:
            raise NearError(f"backend='gsplat' is unavailable: {reason}. Use backend='torch'.")
        return "gsplat"
    # auto
    if means.device.type == "cuda" and means.dtype == torch.float32 and gsplat_status() is None:
        return "gsplat"
    return "torch"


def _check_size(width: object, height: object) -> tuple[int, int]:
    try:
        w, h = int(width), int(height)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise NearError(f"Image size must be integers, got {width!r} x {height!r}.") from None
    if w != width or h != height or w < 1 or h < 1:
        raise NearError(f"Image size must be positive integers, got {width!r} x {height!r}.")
    if w > 16384 or h > 16384:
        raise NearError(f"Image size {w}x{h} is too large (at most 16384 per side).")
    return w, h


def _check_tensors(
    means: object,
    quats: object,
    scales: object,
    opacities: object,
    features: object,
    viewmats: object,
    Ks: object,
    backgrounds: object,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    named = {"means": means, "quats": quats, "scales": scales, "opacities": opacities}
    named |= {"features": features, "viewmats": viewmats, "Ks": Ks}
    if backgrounds is not None:
        named["backgrounds"] = backgrounds
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise NearError(f"rasterize: {name} must be a torch.Tensor, got {type(t).__name__}.")
    m = named["means"]
    assert isinstance(m, Tensor)
    if m.dtype not in (torch.float32, torch.float64):
        raise NearError(f"rasterize: means must be float32 or float64, got {m.dtype}; convert with .float().")
    for name, t in named.items():
        assert isinstance(t, Tensor)
        if t.device != m.device:
            raise NearError(
                f"rasterize: {name} is on {t.device} but means is on {m.device}; "
                "put all inputs on one device."
            )
        if not t.is_floating_point():
            raise NearError(f"rasterize: {name} must be a floating-point tensor, got {t.dtype}.")
    t = {k: v.to(m.dtype) for k, v in named.items() if isinstance(v, Tensor)}

    N = t["means"].shape[0] if t["means"].dim() == 2 else -1
    expect = {"means": (N, 3), "quats": (N, 4), "scales": (N, 3), "opacities": (N,)}
    if t["means"].dim() != 2 or t["means"].shape[1] != 3:
        raise NearError(f"rasterize: means must be [N, 3], got {tuple(t['means'].shape)}.")
    for name, shape in expect.items():
        if tuple(t[name].shape) != shape:
            raise NearError(
                f"rasterize: {name} must have shape {list(shape)} (N = {N} from means), "
                f"got {list(t[name].shape)}."
            )
    vm, K = t["viewmats"], t["Ks"]
    if vm.dim() != 3 or vm.shape[1:] != (4, 4) or vm.shape[0] < 1:
        raise NearError(f"rasterize: viewmats must be [C, 4, 4], got {list(vm.shape)}.")
    C = vm.shape[0]
    if tuple(K.shape) != (C, 3, 3):
        raise NearError(
            f"rasterize: Ks must be [C, 3, 3] = [{C}, 3, 3] (C from viewmats), got {list(K.shape)}."
        )
    f = t["features"]
    ok_f = (f.dim() == 2 and f.shape[0] == N) or (f.dim() == 3 and f.shape[:2] == (C, N))
    if not ok_f or f.shape[-1] < 1:
        raise NearError(
            f"rasterize: features must be [N, D] or [C, N, D] with D >= 1 (N = {N}, C = {C}), "
            f"got {list(f.shape)}."
        )
    D = f.shape[-1]
    bg = t.get("backgrounds")
    if bg is not None:
        if bg.dim() == 1 and bg.shape[0] == D:
            bg = bg.expand(C, D)
        if tuple(bg.shape) != (C, D):
            raise NearError(f"rasterize: backgrounds must be [C, D] = [{C}, {D}], got {list(bg.shape)}.")
    for name, v in t.items():
        # one pass in the common case: a finite sum means finite entries (NaN/Inf propagate)
        if v.numel() and not bool(torch.isfinite(v.sum())) and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise NearError(
                f"rasterize: {name} contains {bad} NaN/Inf value(s); check the model outputs or the "
                "camera (e.g. a zero-scale camera or a diverged training step)."
            )
    if N and bool((torch.linalg.vector_norm(t["quats"], dim=-1) == 0).any()):
        raise NearError("rasterize: some quats are all zero; a rotation quaternion needs a non-zero length.")
    if bool((K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any()):
        raise NearError("rasterize: Ks must have positive focal lengths fx, fy (pixels).")
    return t["means"], t["quats"], t["scales"], t["opacities"], f, vm, K, bg


class _CallableModule(types.ModuleType):
    """``near_blender.render.rasterize`` is both this module and the function: importing the
    submodule first binds the module on the package, so calling it forwards to :func:`rasterize`."""

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        return rasterize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
