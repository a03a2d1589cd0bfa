"""Lighting conditioning (NeAR paper 3.5.2): an HDR environment + a target camera -> three maps.

For an equirect map ``E`` (Blender's layout, :mod:`near_blender.render.envmap`) resampled to
``height x width`` with :func:`.irradiance.downsample_equirect`:

* ``ldr``  = sRGB(Reinhard(E)) * 2 - 1, in [-1, 1] (per channel ``E / (1 + E)``, then the
  IEC 61966-2-1 sRGB encoding), as the published lighting tokenizer does;
* ``log``  = ``log(1 + E) / E_max``. The default normalization is a *fixed* constant,
  ``E_max = log(1 + 65504)`` (65504 = the largest half-float radiance), so every half-float HDR
  maps into [0, 1] and absolute brightness is kept across maps (a map twice as bright gives a
  different ``log`` channel). ``log_norm="max"`` normalizes by the map's own maximum instead;
  a number sets ``E_max`` directly;
* ``dirs`` = for every texel, the world direction that sees it (the environment's Mapping rotation
  applied: texel direction ``t`` is seen from world direction ``Rz(-rotation_z) t``), rotated into the
  camera frame (OpenCV axes: x right, y down, z forward; the viewmat's rotation).

Rotating the environment or moving the camera changes only ``dirs``; ``ldr`` and ``log`` depend on
the pixels alone (they are computed once per map and reused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import NearError
from .color import linear_to_srgb
from .envmap import Environment, equirect_directions, sanitize_radiance
from .envmap import rotation_z as _rot_z
from .irradiance import diffuse_irradiance as diffuse_irradiance  # the prior's kernel, re-exported
from .irradiance import downsample_equirect

HALF_MAX = 65504.0
FIXED_LOG_NORM = math.log1p(HALF_MAX)
# What this module computes, as a stage-2 checkpoint records it (``args.stage2.conditioning``): view
# directions in the camera's frame, log maps normalized by FIXED_LOG_NORM, Reinhard LDR maps.
CONDITIONING = {"directions": "camera", "log_norm": "fixed", "ldr": "reinhard"}


# ---------------------------------------------------------------------------------------------
# The three maps
# ---------------------------------------------------------------------------------------------


def reinhard_ldr(E: np.ndarray) -> np.ndarray:
    """``srgb(E / (1 + E)) * 2 - 1`` in [-1, 1]."""
    return linear_to_srgb(E / (1.0 + E)) * 2.0 - 1.0


def log_intensity(E: np.ndarray, log_norm: str | float = "fixed") -> tuple[np.ndarray, float]:
    """(``log(1 + E) / E_max``, ``E_max``); see the module docstring for ``log_norm``."""
    L = np.log1p(E)
    if log_norm == "fixed":
        e_max = FIXED_LOG_NORM
    elif log_norm == "max":
        e_max = float(L.max()) if float(L.max()) > 0 else 1.0
    elif isinstance(log_norm, int | float) and not isinstance(log_norm, bool):
        e_max = float(log_norm)
        if not (math.isfinite(e_max) and e_max > 0):
            raise NearError(f"log_norm must be positive and finite, got {log_norm}.")
    else:
        raise NearError(f"log_norm must be 'fixed', 'max' or a positive number, got {log_norm!r}.")
    return L / e_max, e_max


def camera_rotation(viewmat: Any) -> np.ndarray:
    """World-to-camera rotation [3, 3] (OpenCV axes) of a Camera, or a [4, 4] / [3, 3] matrix."""
    vm = getattr(viewmat, "viewmat", viewmat)
    if type(vm).__module__.startswith("torch"):
        vm = vm.detach().cpu().double().numpy()
    vm = np.asarray(vm, dtype=np.float64)
    if vm.shape not in ((4, 4), (3, 3)):
        raise NearError(f"The camera must be a Camera or a 4x4 world-to-camera matrix, got shape {vm.shape}.")
    R = vm[:3, :3]
    if not np.all(np.isfinite(R)) or np.abs(R @ R.T - np.eye(3)).max() > 1e-4:
        raise NearError(
            "The camera's world-to-camera rotation is not orthonormal (scaled or sheared camera); "
            "remove the camera object's scale or pass a proper OpenCV viewmat."
        )
    return R


@dataclass(frozen=True)
class ConditioningMaps:
    """The tokenizer inputs, each a float tensor ``[H, W, 3]`` (top row first)."""

    ldr: Any
    log: Any
    dirs: Any

    def stacked(self) -> Any:
        """``[9, H, W]`` channels-first (ldr, log, dirs), the tokenizer's input layout."""
        import torch

        return torch.cat([self.ldr, self.log, self.dirs], -1).permute(2, 0, 1).contiguous()


class EnvConditioning:
    """Camera-independent part of the conditioning of one environment, reusable for many views.

    Args:
        env: an :class:`Environment` (its ``rotation_z`` is used) or a raw equirect ``[H, W, 3]``.
        height, width: conditioning resolution (width defaults to 2 * height).
        log_norm: ``"fixed"`` (default), ``"max"`` or a number (see the module docstring).
        sanitize: repair NaN/Inf/negative pixels with :func:`envmap.sanitize_radiance` (counts in
            ``self.repairs``) instead of raising :class:`NearError`.
    """

    def __init__(
        self,
        env: Environment | Any,
        height: int = 256,
        width: int | None = None,
        log_norm: str | float = "fixed",
        sanitize: bool = False,
        device: Any = None,
        dtype: Any = None,
    ):
        import torch

        self.repairs: dict[str, int] = {}
        if isinstance(env, Environment):
            radiance, self.rotation_z = env.radiance, float(env.rotation_z)
        else:
            radiance, self.rotation_z = env, 0.0
            if sanitize:
                radiance, self.repairs = sanitize_radiance(np.asarray(radiance, dtype=np.float32))
        self.radiance = downsample_equirect(radiance, int(height), None if width is None else int(width))
        self.height, self.width = self.radiance.shape[:2]
        E = self.radiance.astype(np.float64)
        log, self.log_max = log_intensity(E, log_norm)
        self.device = device
        self.dtype = dtype or torch.float32
        self.ldr = torch.as_tensor(reinhard_ldr(E), dtype=self.dtype, device=device)
        self.log = torch.as_tensor(log, dtype=self.dtype, device=device)
        self._texel_dirs = equirect_directions(self.height, self.width)  # [H, W, 3] float64

    def directions(self, viewmat: Any, rotation_z: float | None = None) -> Any:
        """Camera-space texel directions [H, W, 3] (torch) for a Camera / world-to-camera matrix."""
        import torch

        R = camera_rotation(viewmat)
        a = self.rotation_z if rotation_z is None else float(rotation_z)
        M = R @ _rot_z(-a)
        return torch.as_tensor(self._texel_dirs @ M.T, dtype=self.dtype, device=self.device)

    def __call__(self, viewmat: Any, rotation_z: float | None = None) -> ConditioningMaps:
        """The three maps for a camera (``rotation_z`` overrides the environment's rotation)."""
        return ConditioningMaps(self.ldr, self.log, self.directions(viewmat, rotation_z))


def environment_conditioning(
    env: Environment | Any,
    viewmat: Any,
    height: int = 256,
    width: int | None = None,
    log_norm: str | float = "fixed",
    sanitize: bool = False,
) -> ConditioningMaps:
    """One-shot :class:`EnvConditioning` for a single camera."""
    return EnvConditioning(env, height, width, log_norm, sanitize)(viewmat)


# ---------------------------------------------------------------------------------------------
# Diffuse irradiance straight from the tokenizer input (the decoder's diffuse shading prior)
# ---------------------------------------------------------------------------------------------

IRRADIANCE_HEIGHT = 16  # rows the irradiance integral runs over (16 x 32 = 512 directions)


def radiance_basis(env_input: Any, height: int = IRRADIANCE_HEIGHT) -> tuple[Any, Any, Any]:
    """Texel directions, radiant power and solid angles of a stacked conditioning, for the
    decoder's shading priors (diffuse irradiance, glossy reflection).

    ``env_input``: torch ``[B, 9, H, W]`` as :meth:`ConditioningMaps.stacked` builds it (ldr, log,
    dirs) with the **fixed** log normalization, so the HDR radiance is recovered exactly as
    ``L = expm1(log * log(1 + 65504))``. Returns ``(dirs [B, K, 3], power [B, K, 3])`` in the frame
    of the map's direction channels (camera space for the default conditioning): ``power`` is
    ``L * solid angle`` of each texel of the equirect grid, summed over ``f x f`` blocks down to
    ``height`` rows (total power kept exactly), ``dirs`` the unit mean direction of each block,
    ``omega [1, K]`` the solid angle of each block (sr, summing to 4 pi).
    Then ``E(n) = sum_k power_k max(0, n . dirs_k)`` (:func:`.irradiance.diffuse_irradiance`), the
    integral of the baseline and of the dataset's shadow pass (:mod:`near_blender.render.irradiance`).
    """
    import torch

    if env_input.ndim != 4 or env_input.shape[1] != 9:
        raise NearError(f"Conditioning must be [B, 9, H, W], got {tuple(env_input.shape)}.")
    B, _, H, W = env_input.shape
    x = env_input.permute(0, 2, 3, 1)  # [B, H, W, 9]
    radiance = torch.expm1(x[..., 3:6].clamp_min(0.0) * FIXED_LOG_NORM)
    dirs = x[..., 6:9]
    theta = torch.linspace(0.0, math.pi, H + 1, dtype=x.dtype, device=x.device)
    omega = (2.0 * math.pi / W) * (torch.cos(theta[:-1]) - torch.cos(theta[1:]))  # [H] sr per texel
    power = radiance * omega[None, :, None, None]
    f = 1
    while H // (2 * f) >= height and H % (2 * f) == 0 and W % (2 * f) == 0:
        f *= 2
    omega = omega[:, None].expand(H, W)
    if f > 1:
        h, w = H // f, W // f
        power = power.reshape(B, h, f, w, f, 3).sum(dim=(2, 4))
        dirs = dirs.reshape(B, h, f, w, f, 3).mean(dim=(2, 4))
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        omega = omega.reshape(h, f, w, f).sum(dim=(1, 3))
    return dirs.reshape(B, -1, 3), power.reshape(B, -1, 3), omega.reshape(1, -1)


# Glossy reflection from the same basis (the decoder's "pbr" shading prior)
SPECULAR_MAX_EXPONENT = 128.0  # sharpest lobe (~5 deg; the 16 x 32 basis has ~11 deg blocks)
SPECULAR_F0_DIELECTRIC = 0.04  # Principled BSDF, IOR 1.5 (specular IOR level 0.5)


def prefiltered_radiance(reflect_dirs: Any, roughness: Any, dirs: Any, power: Any, omega: Any) -> Any:
    """Environment radiance ``[M, 3]`` averaged over a glossy lobe around ``reflect_dirs [M, 3]``
    (unit, same frame as ``dirs``) for Principled ``roughness [M]`` in [0, 1].

    The lobe is the normalized Phong lobe ``cos^s`` with the Blinn-Phong / GGX equivalent exponent
    ``s = 2 / alpha^2 - 2`` of ``alpha = roughness^2`` (Blender's GGX remapping), clamped to
    ``[1, SPECULAR_MAX_EXPONENT]`` (sharper lobes than the basis resolves would jump from block to
    block); the average is taken over the basis blocks weighted by their solid angle ``omega [1 or
    K]``: the split-sum "prefiltered environment" of real-time PBR, from the ``(dirs, power,
    omega)`` of :func:`radiance_basis`. Differentiable in all inputs.
    """
    import torch

    alpha = roughness.clamp(0.02, 1.0) ** 2
    s = (2.0 / alpha**2 - 2.0).clamp(1.0, SPECULAR_MAX_EXPONENT)
    w = (reflect_dirs @ dirs.T).clamp_min(0.0).pow(s[:, None])  # [M, K]; the nearest block is > 0.9
    omega = omega.reshape(-1, 1)
    acc = w @ torch.cat([power, omega], dim=-1)  # sum w L omega, sum w omega
    return acc[:, :3] / acc[:, 3:].clamp_min(1e-30)


def env_brdf(roughness: Any, n_dot_v: Any) -> tuple[Any, Any]:
    """Scale ``A`` and bias ``B`` ``[M]`` of the split-sum specular, ``F0 * A + B``: Karis' analytic
    fit of the GGX environment BRDF ("Physically Based Shading on Mobile", 2014) for Principled
    ``roughness [M]`` and ``n_dot_v [M]`` (clamped to (0, 1])."""
    import torch

    nv = n_dot_v.clamp(1e-4, 1.0)
    r0 = roughness * -1.0 + 1.0
    r1 = roughness * -0.0275 + 0.0425
    r2 = roughness * -0.572 + 1.04
    r3 = roughness * 0.022 - 0.04
    a004 = torch.minimum(r0 * r0, torch.exp2(-9.28 * nv)) * r0 + r1
    return -1.04 * a004 + r2, 1.04 * a004 + r3


def glossy_albedo(f0: Any, roughness: Any, n_dot_v: Any) -> Any:
    """Directional albedo ``[M, 3]`` of GGX with multiple scattering for Fresnel ``f0 [M, 3]``:
    the single-scattering ``F0 A + B`` of :func:`env_brdf` plus Fdez-Aguera's (2019) multiple-
    scattering term ``E_ms F_avg (F0 A + B) / (1 - F_avg E_ms)``, ``E_ms = 1 - (A + B)``,
    ``F_avg = F0 + (1 - F0) / 21`` (Blender's Principled BSDF defaults to multiscatter GGX, which
    keeps the energy that single scattering loses on rough surfaces: a white metal reflects it all)."""
    a, b = env_brdf(roughness, n_dot_v)
    single = f0 * a[:, None] + b[:, None]
    e_ms = (1.0 - (a + b))[:, None]
    f_avg = f0 + (1.0 - f0) / 21.0
    return single + e_ms * f_avg * single / (1.0 - f_avg * e_ms)
