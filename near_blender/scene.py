"""Rendering a scene of NeAR assets (several LH-SLATs, each placed by a world matrix) under one
environment and camera: what F12, the viewport and ``near render`` do, without Blender.

The real-time path of the paper: per asset the Intrinsic-Aware Decoder runs once (cached by the
sidecar's identity); per environment and camera orientation the lighting tokenizer runs once
(cached: the conditioning directions are camera-space, so every asset shares the tokens); per
frame only the Lighting-Aware Decoder, the heads, the radiance MLP and the rasterizer run. All
assets' Gaussians are rasterized together, so they occlude each other correctly.

Placement: an asset's canonical box [-0.5, 0.5]^3 (Z up) is mapped to the world by its 4x4 matrix;
the rotation and a uniform scale are applied exactly (non-uniform scale is approximated by the
mean scale, see :func:`similarity`). The decoder sees the camera in the asset's own frame.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import NearError
from .render.camera import Camera, stack_cameras
from .render.envmap import Environment
from .utils.progress import CancelCheck, Progress, as_reporter

# Cache counters of SceneRenderer.stats: misses are encoder runs (IAD per asset, tokenizer per
# lighting); conditioning_builds counts the resampling of an environment's pixels.
STAT_KEYS = ("asset_hits", "asset_misses", "lighting_hits", "lighting_misses", "conditioning_builds")
# Network precisions of SceneRenderer.render (the add-on's "Precision" preference).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PASS_KEYS = ("hdr", "alpha", "depth", "normal", "shadow", "base_color", "roughness", "metallic")


@dataclass(frozen=True)
class PlacedAsset:
    """An LH-SLAT placed in the world. ``key`` identifies its data for caching (e.g. path+mtime)."""

    key: Any
    coords: np.ndarray  # [N, 3] int in 0..63
    feats: np.ndarray  # [N, C] float32 (de-normalized LH-SLAT [+ base colour])
    matrix_world: np.ndarray  # [4, 4] canonical box -> world


def similarity(matrix_world: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
    """(rotation [3,3], uniform scale, translation [3], anisotropy) of an object matrix.

    The rotation is the polar factor of the linear part; the scale is the geometric mean of the axis
    scales; ``anisotropy`` = max/min axis scale (1 for an exact similarity).
    """
    M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    A = M[:3, :3]
    U, S, Vt = np.linalg.svd(A)
    if np.linalg.det(A) <= 0 or S.min() < 1e-12:
        raise NearError("A NeAR asset has a zero or mirrored (negative) scale; give it a positive scale.")
    R = U @ Vt
    s = float(np.prod(S) ** (1.0 / 3.0))
    return R, s, M[:3, 3].copy(), float(S.max() / S.min())


def object_viewmat(viewmat: np.ndarray, matrix_world: np.ndarray) -> np.ndarray:
    """The rigid camera (OpenCV world-to-camera) expressed in an asset's canonical frame and units."""
    R, s, t, _ = similarity(matrix_world)
    V = np.asarray(viewmat, dtype=np.float64)
    c_world = -V[:3, :3].T @ V[:3, 3]
    c_obj = R.T @ (c_world - t) / s
    R_cam = V[:3, :3] @ R
    out = np.eye(4)
    out[:3, :3] = R_cam
    out[:3, 3] = -R_cam @ c_obj
    return out


def radiance_key(radiance: np.ndarray) -> str:
    """Content hash of an environment's pixels (blake2b; ~10 ms for a 1k map), so that a world that
    is re-read every frame but did not change is recognised."""
    arr = np.ascontiguousarray(radiance)
    return hashlib.blake2b(arr.view(np.uint8), digest_size=16).hexdigest() + f"{arr.shape}"


def lighting_key(env: Environment, viewmat: np.ndarray, content: str | None = None) -> tuple:
    """Cache key of the light tokens: what the tokenizer sees. Its input is the map's pixels plus the
    camera-space direction of every texel, ``R_cam @ Rz(-rotation_z)``; a moving camera that does not
    turn keeps the key, a turning camera or an animated world rotation changes it."""
    from .render.envmap import rotation_z

    M = np.asarray(viewmat, dtype=np.float64)[:3, :3] @ rotation_z(-float(env.rotation_z))
    return (content or radiance_key(env.radiance), tuple(np.round(M, 7).ravel()))


class SceneRenderer:
    """Renders placed assets with a loaded :class:`~near_blender.pipeline.NearPipeline`; keeps the
    per-asset and per-lighting caches between calls (frames, viewport redraws)."""

    def __init__(self, pipeline: Any, max_assets: int = 16, max_lightings: int = 8) -> None:
        self.pipe = pipeline
        self.model = pipeline.stage2()
        self._assets: OrderedDict[Any, Any] = OrderedDict()
        self._lightings: OrderedDict[Any, Any] = OrderedDict()
        self._conds: OrderedDict[Any, Any] = OrderedDict()
        self.max_assets, self.max_lightings = max_assets, max_lightings
        self.stats = dict.fromkeys(STAT_KEYS, 0)

    # -- caches -------------------------------------------------------------------------------------
    def _asset_cache(self, a: PlacedAsset, precision: str = "fp32") -> Any:
        key = (a.key, precision)
        if key in self._assets:
            self._assets.move_to_end(key)
            self.stats["asset_hits"] += 1
            return self._assets[key]
        self.stats["asset_misses"] += 1  # = one run of the Intrinsic-Aware Decoder
        with torch.no_grad(), self._autocast(precision):
            cache = self.model.encode_asset(self.pipe.stage2_inputs(a.coords, a.feats))
        self._assets[key] = cache
        while len(self._assets) > self.max_assets:
            self._assets.popitem(last=False)
        return cache

    def _lighting_cache(self, env: Environment, viewmat: np.ndarray, precision: str = "fp32") -> Any:
        content = radiance_key(env.radiance)
        key = (*lighting_key(env, viewmat, content), precision)
        if key in self._lightings:
            self._lightings.move_to_end(key)
            self.stats["lighting_hits"] += 1
            return self._lightings[key]
        self.stats["lighting_misses"] += 1  # = one run of the lighting tokenizer
        if content not in self._conds:  # the pixel maps (resampled LDR / log) do not depend on rotation
            self.stats["conditioning_builds"] += 1
            self._conds[content] = self.pipe.conditioning(env.with_rotation(0.0))
            while len(self._conds) > self.max_lightings:
                self._conds.popitem(last=False)
        else:
            self._conds.move_to_end(content)
        env_in = self._conds[content](viewmat, rotation_z=env.rotation_z).stacked()[None]
        with torch.no_grad(), self._autocast(precision):
            cache = self.model.encode_lighting(env_in.to(self.pipe.device))
        self._lightings[key] = cache
        while len(self._lightings) > self.max_lightings:
            self._lightings.popitem(last=False)
        return cache

    # -- rendering ----------------------------------------------------------------------------------
    def render(
        self, assets: Sequence[PlacedAsset], camera: Camera, env: Environment, *args: Any, **options: Any
    ) -> dict[str, np.ndarray]:
        """Images ``[H, W, C]`` (numpy float32, row 0 at the top) of every asset together:
        ``hdr`` (premultiplied scene-linear radiance), ``alpha``, ``depth`` (expected depth along the
        optical axis, 0 where empty), ``normal`` (world space, unit where covered), ``shadow``,
        ``base_color``, ``roughness``, ``metallic`` (premultiplied by coverage).

        Options as :meth:`render_sizes`: ``passes`` as :meth:`RelightableDecoder.render_gaussians`
        (images of a skipped pass are zero), ``progress``, ``cancel``, ``mode`` ("classic" or
        "antialiased" rasterization; default: the model's), ``precision`` ("fp32", "bf16" or "fp16"
        for the networks: autocast; the Gaussians are rasterized in float32 whatever the precision)."""
        return self.render_sizes(assets, [camera], env, *args, **options)[0]

    @torch.no_grad()
    def render_sizes(
        self,
        assets: Sequence[PlacedAsset],
        cameras: Sequence[Camera],
        env: Environment,
        passes: tuple[str, ...] = ("light", "base"),
        progress: Progress | None = None,
        cancel: CancelCheck | None = None,
        mode: str | None = None,
        precision: str = "fp32",
        on_images: Callable[[int, dict[str, np.ndarray]], None] | None = None,
        keep: bool = True,
    ) -> list[dict[str, np.ndarray]]:
        """:meth:`render` for several cameras of one pose (the same ``viewmat``; e.g. a coarse and a
        full resolution of a viewport): the networks run once, only the rasterization per camera.
        ``on_images(i, images)`` is called as soon as camera ``i`` is done (progressive display)."""
        if precision not in PRECISIONS:
            raise NearError(f"Unknown precision {precision!r}; use one of {sorted(PRECISIONS)}.")
        if not cameras:
            raise NearError("render_sizes needs at least one camera.")
        pose = np.asarray(cameras[0].viewmat)
        if any(not np.allclose(np.asarray(c.viewmat), pose, atol=1e-6) for c in cameras[1:]):
            raise NearError(
                "render_sizes: the cameras must share one pose (viewmat); only K and size may differ."
            )
        rep = as_reporter(progress, cancel)
        g = self.gaussians(assets, pose, env, precision, rep) if assets else None
        results = []
        for i, camera in enumerate(cameras):
            rep.update(
                (len(assets) + i) / (len(assets) + len(cameras)),
                f"rasterizing {camera.width}x{camera.height}",
            )
            imgs = _empty(camera.height, camera.width)
            if g is not None:
                imgs.update(self._rasterize(g, camera, passes, mode))
            if keep:  # (False: only ``on_images`` sees them; a tiled frame never exists whole)
                results.append(imgs)
            if on_images is not None:
                on_images(i, imgs)
        rep.update(1.0, "done")
        return results

    @torch.no_grad()
    def gaussians(
        self,
        assets: Sequence[PlacedAsset],
        viewmat: np.ndarray,
        env: Environment,
        precision: str = "fp32",
        progress: Progress | None = None,
        cancel: CancelCheck | None = None,
    ) -> Any:
        """Every asset's Gaussians under ``env`` seen from ``viewmat`` (OpenCV world-to-camera
        [4, 4]), moved to the world, as one :class:`~near_blender.models.gaussian_head.RelightableGaussians`
        (float32, ``radiance`` [M, 3] evaluated: scene-linear HDR for this view; ``batch`` all 0).
        What :meth:`render_sizes` rasterizes and what the exporters (:mod:`near_blender.export`)
        write; before drawing, ``self.model.drawn(g, viewmat, K)`` applies a camera's opacity cut
        and scale floor."""
        device, model = self.pipe.device, self.model
        rep = as_reporter(progress, cancel)
        lighting = self._lighting_cache(env, viewmat, precision)
        parts = []
        for i, a in enumerate(assets):
            rep.update(i / (len(assets) + 1), f"decoding {i + 1}/{len(assets)}")
            cache = self._asset_cache(a, precision)
            vm_obj = torch.as_tensor(object_viewmat(viewmat, a.matrix_world)[None], dtype=torch.float32)
            with self._autocast(precision):
                g = model.gaussians(cache, lighting, vm_obj.to(device))
                g.radiance = model.radiance(g, lighting, vm_obj.to(device))  # before moving to the world
            g = as_float32(g)
            R, s, t, _ = similarity(a.matrix_world)
            parts.append(
                g.transformed(torch.as_tensor(R, dtype=torch.float32, device=device), s,
                              torch.as_tensor(t, dtype=torch.float32, device=device))
            )  # fmt: skip
        g = _concat(parts)
        g.batch = torch.zeros_like(g.batch)
        return g

    def _rasterize(
        self, g: Any, camera: Camera, passes: tuple[str, ...], mode: str | None
    ) -> dict[str, np.ndarray]:
        vm, K = stack_cameras([camera], device=self.pipe.device)
        out = self.model.render_gaussians(  # culled to the camera's clip range (world units, as Blender's)
            g,
            vm,
            K,
            camera.width,
            camera.height,
            camera.model,
            passes,
            mode=mode,
            clip=(camera.near, camera.far),
        )
        imgs = {k: v[0].float().cpu().numpy() for k, v in out.items()}
        imgs.pop("alpha_base", None)
        return imgs

    def _autocast(self, precision: str) -> Any:
        """Autocast context of the networks at ``precision`` (a no-op for fp32)."""
        from contextlib import nullcontext

        if precision == "fp32":
            return nullcontext()
        return torch.autocast(torch.device(self.pipe.device).type, dtype=PRECISIONS[precision])


def as_float32(g: Any) -> Any:
    """The Gaussians with every floating tensor in float32 (autocast leaves some in half)."""
    from dataclasses import replace

    changes = {}
    for name in g.tensor_fields():
        v = getattr(g, name)
        if v.is_floating_point() and v.dtype != torch.float32:
            changes[name] = v.float()
    return replace(g, **changes) if changes else g


def _concat(parts: list[Any]) -> Any:
    from dataclasses import fields

    from .models.gaussian_head import RelightableGaussians

    out = {}
    for f in fields(RelightableGaussians):
        vals = [getattr(p, f.name) for p in parts]
        out[f.name] = None if any(v is None for v in vals) else torch.cat(vals, dim=0)
    return RelightableGaussians(**out)


def _empty(H: int, W: int) -> dict[str, np.ndarray]:
    chans = {
        "hdr": 3,
        "alpha": 1,
        "depth": 1,
        "normal": 3,
        "shadow": 1,
        "base_color": 3,
        "roughness": 1,
        "metallic": 1,
    }
    return {k: np.zeros((H, W, c), np.float32) for k, c in chans.items()}


def composite_over(images: dict[str, np.ndarray], background: np.ndarray | None) -> np.ndarray:
    """RGBA [H, W, 4]: premultiplied ``hdr`` over ``background`` [H, W, 3] (opaque result), or the
    premultiplied RGBA itself when ``background`` is None (film transparent)."""
    a = images["alpha"]
    if background is None:
        return np.concatenate([images["hdr"], a], axis=-1).astype(np.float32)
    rgb = images["hdr"] + (1.0 - a) * background
    return np.concatenate([rgb, np.ones_like(a)], axis=-1).astype(np.float32)


__all__ = ["PlacedAsset", "SceneRenderer", "similarity", "object_viewmat", "composite_over"]
