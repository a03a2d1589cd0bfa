"""Stage-2 assembly: LH-SLAT + lighting conditioning + camera -> HDR image and PBR maps
(paper 3.5 and A.2; the four published models ``decoder``, ``renderer``, ``hdri_encoder``,
``neural_basis``).

Data flow, with the caching API of the interactive path (the paper's real-time path)::

    encode_asset(slat)          once per asset:        IAD -> h, registers; LAD asset cache
                                                       (input_layer(h), LN(h), register K/V)
    encode_lighting(env_input)  once per lighting:     tokenizer -> light tokens; LAD light K/V
    decode_view(asset, light, viewmats, Ks, W, H)  per view:  view embedding + LAD blocks +
                                                       heads + radiance MLP + 2 rasterizations

``forward(slat, env_input, viewmats, Ks, W, H)`` is exactly ``decode_view(encode_asset(slat),
encode_lighting(env_input), ...)``: the full path and the cached path run the same operations on
the same numbers and give identical images.

Conventions: the object lives in [-0.5, 0.5]^3, Z up; SLAT coords index the 64^3 grid of that
box; cameras are OpenCV world-to-camera ``viewmats [B, 4, 4]`` with intrinsics ``Ks [B, 3, 3]`` in
pixels (pixel centres at +0.5). One camera per batch item: the Gaussians of item ``b`` are
rasterized with camera ``b`` only. ``env_input [B or 1, 9, H, W]`` is the tokenizer's conditioning
(LDR, log-HDR, directions; built by :mod:`near_blender.render.conditioning`, not here). Whether
the directions are in world space (the published inference, environment rotation applied to
them) or in camera space (the paper's text) is decided by who builds ``env_input``; with camera
space the lighting must be encoded per camera (one map per batch item).

Rendering (two passes through :func:`near_blender.render.rasterize`):

* the **light pass** splats the Gaussians with their light-specific scales and features
  ``[radiance (3), shadow (1), normal (3)]``: radiance from the radiance MLP (HDR, linear),
  shadow from the lighting head, normal = shortest axis of the light-specific scale (world space,
  facing the camera);
* the **base pass** splats them with their base (intrinsic) scales and features
  ``[base colour (3), roughness (1), metallic (1)]``.

Gaussians whose opacity is below 1/255 (including the negative opacities the tanh activation
allows) are dropped before rasterizing and before the radiance MLP: the rasterizer skips them
anyway (``alpha = o exp(-power) < 1/255``), so this changes neither the images nor the gradients.

Returned images (all ``[B, H, W, X]`` float, over a black background, i.e. **premultiplied by
alpha**: a pixel holds ``sum_i w_i f_i`` with compositing weights ``w_i``; divide by ``alpha``
for the un-premultiplied surface value): ``hdr`` (3, linear HDR radiance), ``shadow`` (1),
``alpha`` (1, accumulated opacity of the light pass), ``depth`` (1, expected camera-space depth
of the light pass, 0 where alpha is 0), ``normal`` (3, **not** premultiplied: the composited
world-space normal renormalized to unit length, 0 where alpha is 0), ``base_color`` (3),
``roughness`` (1), ``metallic`` (1) and ``alpha_base`` (1, accumulated opacity of the base pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from .. import NearError
from ..sparse import SparseTensor
from .gaussian_head import RelightableGaussians, floor_scales, footprint_floor
from .intrinsic_decoder import IntrinsicAwareDecoder
from .lighting_decoder import LADAssetCache, LADLightingCache, LightingAwareDecoder
from .lighting_tokenizer import LightingTokenizer
from .model_config import merge_config
from .radiance_mlp import DIFFUSE_SKIPS_METALS, GLOSSY_PRIORS, RadianceMLP
from .registry import get_model_class

MODEL_NAMES = ("decoder", "renderer", "hdri_encoder", "neural_basis")
MIN_OPACITY = 1.0 / 255.0
IMAGE_KEYS = (
    "hdr",
    "shadow",
    "alpha",
    "depth",
    "normal",
    "base_color",
    "roughness",
    "metallic",
    "alpha_base",
)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


# the class of each stage-2 model, under its published name
STAGE2_CLASSES: dict[str, type[nn.Module]] = {
    "decoder": IntrinsicAwareDecoder,
    "renderer": LightingAwareDecoder,
    "hdri_encoder": LightingTokenizer,
    "neural_basis": RadianceMLP,
}


def stage2_configs(name: str = "near-tiny", **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{model name: {"name": class name, "args": kwargs}}`` of the four stage-2 models.

    ``"near-paper"``: width 768, IAD 12 blocks, LAD 6 blocks, 4096 light tokens x 768, 16
    registers, K = 32 Gaussians per voxel, 32-d colour feature (the published sizes).
    ``"near-tiny"``: the CPU default (width 64, IAD 2 blocks, LAD 2 blocks, 64 light tokens,
    16 registers, K = 4, 8-d colour feature; conditioning maps of 64x64 or more), sized so that
    a 20k-voxel asset renders at 256^2 through the cached path on 2 CPU cores (see
    ``benchmarks/decoder.md``). ``overrides`` maps a model name to constructor overrides, e.g.
    ``stage2_configs("near-tiny", decoder={"register_mode": "aggregate"})``.
    """
    unknown = set(overrides) - set(MODEL_NAMES)
    if unknown:
        raise NearError(f"Unknown stage-2 model name(s) {sorted(unknown)}; use {list(MODEL_NAMES)}.")
    classes = STAGE2_CLASSES
    if name == "near-paper":
        base = {k: cls.paper_config() for k, cls in classes.items()}
    elif name == "near-tiny":
        base = {k: cls.tiny_config() for k, cls in classes.items()}
        base["renderer"]["num_register_tokens"] = base["decoder"]["num_register_tokens"]
    else:
        raise NearError(f"Unknown stage-2 config {name!r}; choose 'near-paper' or 'near-tiny'.")
    out = {}
    for k, cls in classes.items():
        extra = dict(overrides.get(k) or {})
        rep = extra.get("representation_config")
        if isinstance(rep, dict) and isinstance(base[k].get("representation_config"), dict):
            extra["representation_config"] = {**base[k]["representation_config"], **rep}  # merged
        args = merge_config(cls, base[k], extra)  # rejects names the constructor does not take
        out[k] = {"name": cls.near_name, "args": args}  # type: ignore[attr-defined]
    return out


# ---------------------------------------------------------------------------------------------
# Caches
# ---------------------------------------------------------------------------------------------


@dataclass
class AssetCache:
    """Everything computed once per asset: the IAD output and the LAD's asset-only part.

    ``slat`` the input SLAT; ``features`` the intrinsic features h (SparseTensor ``[N, C]``);
    ``registers`` ``[B, R, C]``; ``lad`` the lighting-aware decoder's asset cache.
    """

    slat: SparseTensor
    features: SparseTensor
    registers: Tensor
    lad: LADAssetCache

    @property
    def batch_size(self) -> int:
        return self.slat.batch_size

    @property
    def num_voxels(self) -> int:
        return len(self.slat)

    def detach(self) -> AssetCache:
        """A copy cut from the autograd graph (for interactive use after a training step)."""
        lad = self.lad
        return AssetCache(
            self.slat.detach(),
            self.features.detach(),
            self.registers.detach(),
            LADAssetCache(
                lad.voxels.detach(),
                lad.coords,
                lad.h_norm.detach(),
                [t.detach() for t in lad.register_kv],
                lad.inverse,
                voxel_normals=lad.voxel_normals,
                voxel_normals_oriented=lad.voxel_normals_oriented,
                voxel_base_color=lad.voxel_base_color,
            ),
        )


@dataclass
class LightingCache:
    """Everything computed once per lighting: tokens ``[B or 1, N_L, C]``, the LAD's K/V and the
    radiance basis ``(dirs, power)`` ``[B or 1, K, 3]`` + ``omega [1, K]`` of the conditioning map
    (for the shading priors; :func:`~near_blender.render.conditioning.radiance_basis`)."""

    tokens: Tensor
    lad: LADLightingCache
    irradiance: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])


# ---------------------------------------------------------------------------------------------
# The assembly
# ---------------------------------------------------------------------------------------------


class RelightableDecoder(nn.Module):
    """Tokenizer + IAD + LAD (with heads) + radiance MLP + rasterization (module docstring).

    Sub-modules carry the published model names: ``decoder`` (IAD), ``renderer`` (LAD),
    ``hdri_encoder`` (tokenizer), ``neural_basis`` (radiance MLP); each is saved and loaded on its
    own through :func:`~near_blender.models.save_pretrained` / ``from_pretrained`` (or a
    :class:`~near_blender.pipeline.NearPipeline` holding them under these names).

    Rasterization settings (constructor): ``mode`` ("classic" | "antialiased"), ``backend``
    ("auto" | "torch" | "gsplat"), ``near_plane``, ``far_plane``.
    """

    def __init__(
        self,
        decoder: IntrinsicAwareDecoder,
        renderer: LightingAwareDecoder,
        hdri_encoder: LightingTokenizer,
        neural_basis: RadianceMLP,
        mode: str = "classic",
        backend: str = "auto",
        near_plane: float = 0.01,
        far_plane: float = 1e10,
    ) -> None:
        super().__init__()
        self.decoder, self.renderer = decoder, renderer
        self.hdri_encoder, self.neural_basis = hdri_encoder, neural_basis
        self.mode, self.backend = mode, backend
        self.near_plane, self.far_plane = float(near_plane), float(far_plane)
        self._check_compatible()

    def _check_compatible(self) -> None:
        iad, lad, tok, mlp = self.decoder, self.renderer, self.hdri_encoder, self.neural_basis
        problems = []
        if iad.model_channels != lad.latent_channels:
            problems.append(f"IAD width {iad.model_channels} != LAD latent_channels {lad.latent_channels}")
        if iad.model_channels != lad.cond_channels:
            problems.append(
                f"IAD registers width {iad.model_channels} != LAD cond_channels {lad.cond_channels}"
            )
        if tok.output_dim != lad.cond_channels:
            problems.append(f"tokenizer output_dim {tok.output_dim} != LAD cond_channels {lad.cond_channels}")
        if mlp.input_dim != lad.layout.color_feature_dim:
            problems.append(
                f"radiance MLP input_dim {mlp.input_dim} != LAD colour feature {lad.layout.color_feature_dim}"
            )
        if iad.resolution != lad.resolution:
            problems.append(f"IAD resolution {iad.resolution} != LAD resolution {lad.resolution}")
        if problems:
            raise NearError("The stage-2 models do not fit together: " + "; ".join(problems) + ".")

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_configs(
        cls, configs: Mapping[str, Mapping[str, Any]], **render_options: Any
    ) -> RelightableDecoder:
        """Build from ``{model name: {"name", "args"}}`` (e.g. :func:`stage2_configs`)."""
        missing = [k for k in MODEL_NAMES if k not in configs]
        if missing:
            raise NearError(f"Stage-2 configs lack {missing}; need {list(MODEL_NAMES)}.")
        models = {k: get_model_class(configs[k]["name"])(**configs[k]["args"]) for k in MODEL_NAMES}
        return cls(**models, **render_options)

    @classmethod
    def from_models(cls, models: Mapping[str, nn.Module], **render_options: Any) -> RelightableDecoder:
        """Assemble from loaded models under the published names (e.g. ``NearPipeline.models``)."""
        missing = [k for k in MODEL_NAMES if k not in models]
        if missing:
            raise NearError(f"The pipeline lacks the stage-2 model(s) {missing}; need {list(MODEL_NAMES)}.")
        for k, want in STAGE2_CLASSES.items():
            if not isinstance(models[k], want):
                raise NearError(f"Model {k!r} is a {type(models[k]).__name__}, expected {want.__name__}.")
        return cls(**{k: models[k] for k in MODEL_NAMES}, **render_options)

    def stage2_models(self) -> dict[str, nn.Module]:
        """The four models under their published names (e.g. for ``NearPipeline(models=...)``)."""
        return {k: getattr(self, k) for k in MODEL_NAMES}

    # -- once per asset / per lighting ----------------------------------------------------------------
    def encode_asset(self, slat: SparseTensor) -> AssetCache:
        """Run the IAD once: ``slat`` (feats ``[N, latent]``, coords ``[N, 4]``) -> :class:`AssetCache`."""
        h, registers = self.decoder(slat)
        lad = self.renderer.prepare_asset(
            h,
            registers,
            batch_size=slat.batch_size,
            slat_feats=slat.feats if self.renderer.reads_slat_channels else None,
        )
        return AssetCache(slat, h, registers, lad)

    def encode_lighting(self, env_input: Tensor) -> LightingCache:
        """Run the tokenizer once: ``env_input [B or 1, 9, H, W]`` -> :class:`LightingCache`."""
        from ..render.conditioning import radiance_basis

        tokens = self.hdri_encoder(env_input)
        irr = radiance_basis(env_input) if self.shading_prior != "none" else None
        return LightingCache(tokens, self.renderer.prepare_lighting(tokens), irr)

    @property
    def shading_prior(self) -> str:
        """The radiance MLP's ``shading_prior`` (``"none"`` for the published models)."""
        return getattr(self.neural_basis, "shading_prior", "none")

    # -- per view ---------------------------------------------------------------------------------
    def gaussians(self, asset: AssetCache, lighting: LightingCache, viewmats: Tensor) -> RelightableGaussians:
        """The relightable Gaussians of every item, seen by ``viewmats [B, 4, 4]`` under the lighting."""
        return self.renderer.decode(asset.lad, lighting.lad, viewmats)

    def decode_view(
        self,
        asset: AssetCache,
        lighting: LightingCache,
        viewmats: Tensor,
        Ks: Tensor,
        width: int,
        height: int,
        camera_model: str = "pinhole",
        passes: tuple[str, ...] = ("light", "base"),
    ) -> dict[str, Tensor]:
        """Images of the prepared asset under the prepared lighting (see the module docstring)."""
        B = asset.batch_size
        if Ks.ndim != 3 or Ks.shape != (B, 3, 3):
            raise NearError(
                f"Intrinsics must be [B, 3, 3] with B = {B} (one camera per item), got {tuple(Ks.shape)}."
            )
        if viewmats.ndim != 3 or viewmats.shape[0] != B:
            raise NearError(
                f"Cameras must be [B, 4, 4] with B = {B} (one camera per item), got {tuple(viewmats.shape)}."
            )
        g = self.gaussians(asset, lighting, viewmats)
        if "light" in passes:
            g.radiance = self.radiance(g, lighting, viewmats)
        return self.render_gaussians(g, viewmats, Ks, width, height, camera_model, passes)

    def radiance(self, g: RelightableGaussians, lighting: LightingCache, viewmats: Tensor) -> Tensor:
        """HDR radiance ``[M, 3]`` of the Gaussians ``g`` (decoded with ``viewmats [B, 4, 4]``).

        The radiance MLP's output, plus, with ``shading_prior == "diffuse"`` or ``"pbr"``, the
        diffuse term ``base_colour * (1 - metallic) * shadow * E(n) / pi`` (``"diffuse_all"``: without
        the ``(1 - metallic)``): ``n`` is each Gaussian's
        normal rotated by its item's viewmat into the frame of the conditioning's directions (camera
        space for the default conditioning; a scaled object-to-camera viewmat is fine, the normal is
        renormalized) and ``E`` the irradiance integrated over the conditioning map, i.e. the
        dataset's definition of ``shadow`` (:mod:`near_blender.data.shadow`). ``"pbr"`` adds the
        split-sum glossy term ``shadow * L_pre(r, roughness) * albedo(F0, roughness, n.v)``
        (``"pbr_dielectric"``: the same with ``F0 = 0.04`` and the diffuse term of
        ``"diffuse_all"``), times the radiance MLP's ``glossy_weight``: ``r``
        the view direction mirrored about ``n`` (the camera at the viewmat's origin), ``L_pre`` the
        map averaged over the roughness's lobe
        (:func:`~near_blender.render.conditioning.prefiltered_radiance`), ``F0 = 0.04 (1 - metallic) + base_colour * metallic`` and ``albedo`` the GGX directional
        albedo with multiple scattering (:func:`~near_blender.render.conditioning.glossy_albedo`).
        ``L_pre`` (an ``[M, K]`` lobe-weighted average) gets no gradient, which makes it 1.4x
        cheaper; the glossy term still trains base colour, metallic and roughness through the
        albedo, and roughness has its own loss.
        """
        import math

        from ..render.conditioning import (
            SPECULAR_F0_DIELECTRIC,
            diffuse_irradiance,
            glossy_albedo,
            prefiltered_radiance,
        )

        rad = self.neural_basis.radiance(g.color_feature, g.normals)
        if self.shading_prior == "none" or g.means.shape[0] == 0:
            return rad
        if lighting.irradiance is None:
            raise NearError("This lighting was encoded without an irradiance basis; re-encode it.")
        dirs, power, omega = lighting.irradiance
        glossy = self.shading_prior in GLOSSY_PRIORS
        dielectric = self.shading_prior == "pbr_dielectric"
        E = torch.zeros_like(rad)
        spec = torch.zeros_like(rad) if glossy else None
        for b in range(viewmats.shape[0]):
            sel = g.batch == b
            if not bool(sel.any()):
                continue
            idx = (sel.nonzero()[:, 0],)
            R = viewmats[b, :3, :3].to(rad.dtype)
            n = torch.nn.functional.normalize(g.normals[sel].to(rad.dtype) @ R.T, dim=-1)
            i = b if dirs.shape[0] > 1 else 0
            d_i, p_i = dirs[i].to(rad.dtype), power[i].to(rad.dtype)
            E = E.index_put(idx, diffuse_irradiance(n, d_i, p_i))
            if spec is not None:
                p_cam = g.means[sel].to(rad.dtype) @ R.T + viewmats[b, :3, 3].to(rad.dtype)
                v = -torch.nn.functional.normalize(p_cam, dim=-1)  # towards the camera
                n_dot_v = (n * v).sum(-1, keepdim=True)
                r = torch.nn.functional.normalize(2.0 * n_dot_v * n - v, dim=-1)
                rough = g.roughness[sel].to(rad.dtype)
                m = 0.0 if dielectric else g.metallic[sel].to(rad.dtype)[:, None]
                f0 = SPECULAR_F0_DIELECTRIC * (1.0 - m) + g.base_color[sel].to(rad.dtype) * m
                with torch.no_grad():  # a constant of the lighting for the gradients: see above
                    l_pre = prefiltered_radiance(r, rough, d_i, p_i, omega.to(rad.dtype))
                spec = spec.index_put(idx, l_pre * glossy_albedo(f0, rough, n_dot_v[:, 0]))
        weight = (1.0 - g.metallic) * g.shadow if self.shading_prior in DIFFUSE_SKIPS_METALS else g.shadow
        out = g.base_color * weight[:, None] * E / math.pi + rad
        if spec is None:
            return out
        return out + self.neural_basis.glossy_weight * g.shadow[:, None] * spec

    def render_gaussians(
        self,
        g: RelightableGaussians,
        viewmats: Tensor,
        Ks: Tensor,
        width: int,
        height: int,
        camera_model: str = "pinhole",
        passes: tuple[str, ...] = ("light", "base"),
        mode: str | None = None,
        clip: tuple[float, float] | None = None,
    ) -> dict[str, Tensor]:
        """Radiance MLP + the rasterization passes, item ``b`` with camera ``b``.

        ``passes``: ``"light"`` (hdr, shadow, alpha, depth, normal) and/or ``"base"`` (base_color,
        roughness, metallic, alpha_base); leaving one out skips its rasterization (e.g. a viewport
        that shows only the HDR image, or a loss on HDR and alpha only). ``mode``: the rasterization
        mode for this call ("classic" | "antialiased"; default: the model's own). ``clip``: the
        camera's (near, far) clip distances for this call (Gaussians whose centre lies outside are
        culled; default: the model's ``near_plane`` / ``far_plane``).
        """
        from ..render.rasterize import rasterize

        unknown = set(passes) - {"light", "base"}
        if unknown or not passes:
            raise NearError(f"passes must be a non-empty subset of ('light', 'base'), got {passes}.")
        B = viewmats.shape[0]
        if g.means.shape[0] and int(g.batch.max()) >= B:
            raise NearError(f"The Gaussians span more batch items than the {B} camera(s) given.")
        dtype = g.means.dtype
        viewmats, Ks = viewmats.to(dtype), Ks.to(dtype)
        near_plane, far_plane = clip if clip is not None else (self.near_plane, self.far_plane)
        outs: dict[str, list[Tensor]] = {}
        for b in range(B):
            gb = self.drawn(g.select(g.batch == b), viewmats[b], Ks[b], camera_model)
            common = dict(
                viewmats=viewmats[b : b + 1], Ks=Ks[b : b + 1], width=width, height=height,
                near_plane=near_plane, far_plane=far_plane, mode=mode or self.mode,
                camera_model=camera_model, backend=self.backend, eps2d=self.renderer.rep.pixel_filter,
            )  # fmt: skip
            maps: list[tuple[str, Tensor]] = []
            light_scales, scales = gb.light_scales, gb.scales
            if "light" in passes:
                radiance = gb.radiance
                if radiance is None:
                    if self.shading_prior != "none":
                        raise NearError(
                            "This model's radiance needs the lighting (diffuse shading prior): set "
                            "g.radiance = model.radiance(g, lighting, viewmats) before rendering."
                        )
                    radiance = self.neural_basis.radiance(gb.color_feature, gb.normals)
                feats = torch.cat([radiance, gb.shadow[:, None], gb.normals], dim=-1)
                lf, la, ld = rasterize(gb.means, gb.quats, light_scales, gb.opacities, feats, **common)
                n = lf[..., 4:7]
                norm = n.norm(dim=-1, keepdim=True)
                normal = torch.where(norm > 1e-12, n / norm.clamp_min(1e-12), torch.zeros_like(n))
                maps += [("hdr", lf[..., 0:3]), ("shadow", lf[..., 3:4]), ("alpha", la), ("depth", ld)]
                maps += [("normal", normal)]
            if "base" in passes:
                feats = torch.cat([gb.base_color, gb.roughness[:, None], gb.metallic[:, None]], dim=-1)
                bf, ba, _ = rasterize(gb.means, gb.quats, scales, gb.opacities, feats, **common)
                maps += [
                    ("base_color", bf[..., 0:3]),
                    ("roughness", bf[..., 3:4]),
                    ("metallic", bf[..., 4:5]),
                ]
                maps += [("alpha_base", ba)]
            for key, val in maps:
                outs.setdefault(key, []).append(val)
        return {k: torch.cat(v, dim=0) for k, v in outs.items()}

    def drawn(
        self, g: RelightableGaussians, viewmat: Tensor, K: Tensor, camera_model: str = "pinhole"
    ) -> RelightableGaussians:
        """The Gaussians ``g`` (of one item) as the rasterizer draws them through one camera
        (``viewmat [4, 4]`` world-to-camera, OpenCV; ``K [3, 3]`` pixels): those with an opacity of at
        least ``MIN_OPACITY``, both scale sets floored for this camera when the model has a footprint
        floor (``min_footprint`` is then None). What :meth:`render_gaussians` rasterizes and what the
        exporters (:mod:`near_blender.export`) write."""
        gb = g.select(g.opacities >= MIN_OPACITY)
        if gb.min_footprint is None:
            return gb
        light_scales, scales = self._footprint_scales(gb, viewmat, K, camera_model)  # (not published)
        return replace(gb, light_scales=light_scales, scales=scales, min_footprint=None)

    def _footprint_scales(
        self, g: RelightableGaussians, viewmat: Tensor, K: Tensor, camera_model: str
    ) -> tuple[Tensor, Tensor]:
        """``(light_scales, scales)`` of ``g`` floored so that every drawn footprint is at least
        ``g.min_footprint`` (``min_scale_mode`` "footprint", see :mod:`.gaussian_head`) through the
        camera ``viewmat [4, 4]``, ``K [3, 3]``, the rasterizer's pixel filter counted."""
        depth = g.means @ viewmat[2, :3] + viewmat[2, 3]
        focal = torch.sqrt(K[0, 0] * K[1, 1])
        eps2d = self.renderer.rep.pixel_filter
        floor = footprint_floor(g.min_footprint, depth, focal, eps2d, camera_model == "ortho")
        floor, axes = floor[:, None], self.renderer.rep.min_scale_axes
        return floor_scales(g.light_scales, floor, axes), floor_scales(g.scales, floor, axes)

    # -- the full path ------------------------------------------------------------------------------
    def forward(
        self,
        slat: SparseTensor,
        env_input: Tensor,
        viewmats: Tensor,
        Ks: Tensor,
        width: int,
        height: int,
        camera_model: str = "pinhole",
        passes: tuple[str, ...] = ("light", "base"),
        return_gaussians: bool = False,
    ) -> dict[str, Any]:
        """SLAT + conditioning ``[B or 1, 9, H, W]`` + cameras -> images (identical to the cached path).

        ``return_gaussians`` adds the decoded :class:`RelightableGaussians` under ``"gaussians"``
        (training reads their scales and opacities for the regularizers of paper eq. 10).
        """
        asset, lighting = self.encode_asset(slat), self.encode_lighting(env_input)
        if not return_gaussians:
            return self.decode_view(asset, lighting, viewmats, Ks, width, height, camera_model, passes)
        g = self.gaussians(asset, lighting, viewmats)
        if "light" in passes:
            g.radiance = self.radiance(g, lighting, viewmats)
        out: dict[str, Any] = dict(
            self.render_gaussians(g, viewmats, Ks, width, height, camera_model, passes)
        )
        out["gaussians"] = g
        return out


def normalized_alpha(image: Tensor, alpha: Tensor, eps: float = 1e-6) -> Tensor:
    """Un-premultiply a composited map: ``image / alpha`` where ``alpha > eps``, else 0."""
    return torch.where(alpha > eps, image / alpha.clamp_min(eps), torch.zeros_like(image))


__all__ = [
    "AssetCache",
    "LightingCache",
    "RelightableDecoder",
    "stage2_configs",
    "normalized_alpha",
    "MODEL_NAMES",
]
