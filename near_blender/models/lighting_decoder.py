"""Lighting-Aware Decoder D_E (paper 3.5.2-3.5.3; published model ``renderer``, class
``SLatGaussianRenderer``): intrinsic voxel features + registers + lighting tokens + camera ->
relightable Gaussians.

Inputs (varlen, one camera per batch item):

* ``h``: intrinsic features ``[N, C_in]`` from the IAD with ``coords [N, 4]`` int
  ``(batch, x, y, z)``, x/y/z in ``0..resolution-1`` -- or any object with ``.feats`` / ``.coords``
  of that layout (a ``SparseTensor``);
* ``registers`` ``[B or 1, R, C_ctx]`` (the IAD's register tokens), ``light_tokens``
  ``[B or 1, N_L, C_ctx]`` (the lighting tokenizer's output), ``viewmats`` ``[B, 4, 4]`` (OpenCV
  world-to-camera, object in [-0.5, 0.5]^3).

Forward (published data flow):

1. ``e = ViewEmbedding(voxels, camera)`` (:mod:`.view_embedding`);
2. ``x = input_layer(h) (+ APE if pe_mode == "ape") + e``;
3. ``num_blocks`` x [``x += CA(LN(x), registers)``; ``x += CA(LN(x), light_tokens)``;
   ``x += FFN(LN(x))``] -- LayerNorms without affine (eps 1e-6, fp32), FFN 4x with tanh-GELU, no
   voxel self-attention; every cross-attention attends within its own batch item only;
4. heads (:mod:`.gaussian_head`): intrinsic heads read ``LN(h) + e`` (the paper's h^v), lighting
   heads read ``LN(x)`` (h^e); decoding into :class:`~.gaussian_head.RelightableGaussians`.

Caching (the paper's real-time path): :meth:`SLatGaussianRenderer.prepare_asset` computes
everything that depends only on the asset (``input_layer(h)``, ``LN(h)``, the registers' keys and
values of every block), :meth:`~LightingAwareDecoder.prepare_lighting` the lighting tokens' keys
and values of every block; :meth:`~LightingAwareDecoder.decode` then runs only the per-view part
(view embedding, queries, FFNs, heads). ``forward`` is exactly ``decode(prepare_asset(...),
prepare_lighting(...), viewmats)``, so both paths give the same numbers.

The blocks (:mod:`.lighting_block`) are built from the shared TRELLIS modules of :mod:`.blocks`
(``SparseMultiHeadAttention``, ``SparseFeedForwardNet``, ``AbsolutePositionEmbedder``).
Cross-attention modules use TRELLIS names and layout (``to_q``, ``to_kv`` with k then v, each
head-major, ``to_out``; all with biases). The per-voxel priors of the asset (input-SLAT base
colour and normals, voxel-shell normals) come from :mod:`.voxel_priors`. A block at width 768 holds 9,447,168 parameters; the
parts outside the blocks (input layer 590,592; view embedding 79,872; heads 2,534,624) hold
3,205,088 with the published head layout (K = 32, F = 32, 1 + 2 auxiliary channels), so the totals
for 1/3/6/9 blocks are 12,652,256 / 31,546,592 / 59,888,096 / 88,229,600 (paper table 2: 12.65M /
31.55M / 59.8M / 88.23M). State-dict keys match the published renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .. import NearError
from ..sparse import SparseTensor
from .blocks import AbsolutePositionEmbedder
from .compat import DEFAULT_COMPAT, centre_method, check_compat, shared_read_out
from .gaussian_head import (
    GaussianHeads,
    GaussianLayout,
    RelightableGaussians,
    RepresentationConfig,
    decode_gaussians,
    hammersley_offsets,
)
from .lighting_block import LightingAwareBlock
from .model_config import adopt_children, merge_config
from .registry import register_model
from .view_embedding import (
    ViewEmbedding,
    camera_centres,
    check_view_options,
    check_viewmats,
    frame_offset,
    view_rays,
    voxel_centres,
)
from .voxel_priors import parse_slat_channels, read_slat_channels, voxel_normals

# ---------------------------------------------------------------------------------------------
# Caches (the interactive path: once per asset, once per lighting, then per view)
# ---------------------------------------------------------------------------------------------


@dataclass
class LADAssetCache:
    """View- and light-independent part of the decoder for one asset batch.

    ``voxels``: SparseTensor ``[N, C]`` = ``input_layer(h) (+ APE)``, voxels sorted by batch item;
    ``coords`` ``[N, 4]`` long in the same order; ``h_norm`` ``[N, C_in]`` = ``LN(h)`` (what the
    intrinsic heads read, plus the view embedding); ``register_kv``: per block the keys/values of
    the registers ``[B or 1, R, 2, H, D]``; ``inverse``: the permutation back to the caller's
    voxel order (None when the input was already sorted).
    """

    voxels: SparseTensor
    coords: Tensor
    h_norm: Tensor
    register_kv: list[Tensor]
    inverse: Tensor | None = None
    voxel_normals: Tensor | None = None  # [N, 3] with representation normal_source "voxels"/"features"
    voxel_normals_oriented: Tensor | None = None  # [N] bool: normals that must not be flipped
    voxel_base_color: Tensor | None = None  # [N, 3] with base_color_skip

    @property
    def batch_size(self) -> int:
        return self.voxels.batch_size

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


@dataclass
class LADLightingCache:
    """Per block the keys/values ``[B or 1, N_L, 2, H, D]`` of the lighting tokens."""

    light_kv: list[Tensor]
    batch_size: int


# ---------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------


def check_lad_options(
    pe_mode: str,
    view_frame: str,
    view_direction_space: str,
    base_color_activation: str,
    resolution: int,
    num_blocks: int,
    model_channels: int,
    latent_channels: int,
) -> None:
    """NearError for a lighting-aware decoder configuration this implementation cannot build."""
    if pe_mode not in ("null", "ape"):
        raise NearError(f"The lighting-aware decoder supports pe_mode 'null' or 'ape', got {pe_mode!r}.")
    check_view_options(view_frame, view_direction_space)
    if base_color_activation not in ("sh_dc", "sigmoid"):
        raise NearError(f"Unknown base colour activation {base_color_activation!r}.")
    if resolution < 1 or num_blocks < 0 or model_channels < 1:
        raise NearError("resolution and model_channels must be positive and num_blocks >= 0.")
    if latent_channels != model_channels:
        raise NearError(
            f"latent_channels ({latent_channels}) must equal model_channels ({model_channels}): "
            "the intrinsic heads add the view embedding to the normalized input features."
        )


@register_model("SLatGaussianRenderer", "LightingAwareDecoder")
class LightingAwareDecoder(nn.Module):
    """The lighting-aware decoder with its Gaussian heads (see the module docstring).

    Constructor arguments are the published ones plus ours (last group). Accepted for checkpoint
    JSON compatibility without effect here: ``num_register_tokens`` (any R works),
    ``pretrained_decoder_path`` (weights come from the checkpoint file), ``attn_mode``,
    ``window_size`` and ``qk_rms_norm`` (the LAD has no voxel self-attention), ``use_fp16`` (the
    caller picks the dtype). ``representation_config`` takes the published keys (``lr``,
    ``perturb_offset``, ``voxel_size``, ``num_gaussians``, ``3d_filter_kernel_size``,
    ``scaling_bias``, ``opacity_bias``, ``scaling_activation``) and ours (``normal_source``,
    ``normal_radius``, ``min_scale``, ``min_scale_axes``, ``min_scale_mode``: see
    :mod:`.gaussian_head`).

    Ours (defaults = the published behaviour): ``color_feature_dim`` F (32; the paper says 48),
    ``n_extra_pbr`` / ``n_extra_light`` auxiliary sigmoid channels (1 / 2), ``view_frame``
    (``"grid01"`` | ``"world"``) and ``view_direction_space`` (``"world"`` | ``"camera"``, see
    :mod:`.view_embedding`), ``base_color_activation`` (``"sh_dc"`` | ``"sigmoid"``, see
    :mod:`.gaussian_head`). ``latent_channels`` must equal ``model_channels``: the intrinsic heads
    read ``LN(h) + e``. ``compat`` (:mod:`.compat`): ``"published"`` (default, what the published
    weights need) reads the heads as the published renderer does and takes camera centres by matrix
    inverse; ``"near"`` gives each head its own channels (the paper) and uses ``-R^T t``.
    """

    PUBLISHED_NAME = "SLatGaussianRenderer"

    def __init__(
        self,
        resolution: int = 64,
        model_channels: int = 768,
        latent_channels: int = 768,
        cond_channels: int = 768,
        num_blocks: int = 6,
        num_register_tokens: int = 16,
        pretrained_decoder_path: str | None = None,
        num_heads: int | None = None,
        num_head_channels: int = 64,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        pe_mode: str = "null",
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        representation_config: dict[str, Any] | None = None,
        color_feature_dim: int = 32,
        n_extra_pbr: int = 1,
        n_extra_light: int = 2,
        view_frame: str = "grid01",
        view_direction_space: str = "world",
        base_color_activation: str = "sh_dc",
        base_color_skip: dict[str, Any] | None = None,
        feature_normals: dict[str, Any] | None = None,
        compat: str = DEFAULT_COMPAT,
    ) -> None:
        super().__init__()
        self.compat = check_compat(compat)
        self.centre_method = centre_method(compat)
        check_lad_options(pe_mode, view_frame, view_direction_space, base_color_activation,
                          resolution, num_blocks, model_channels, latent_channels)  # fmt: skip
        self.resolution, self.model_channels = resolution, model_channels
        self.latent_channels, self.cond_channels = latent_channels, cond_channels
        self.num_register_tokens, self.pe_mode = num_register_tokens, pe_mode
        self.num_heads = num_heads or model_channels // num_head_channels
        self.use_checkpoint, self.use_fp16 = use_checkpoint, use_fp16
        self.view_frame, self.view_direction_space = view_frame, view_direction_space
        self.base_color_activation = base_color_activation
        self.base_color_skip = parse_slat_channels("base_color_skip", base_color_skip)
        self.feature_normals = parse_slat_channels("feature_normals", feature_normals)
        self.rep = RepresentationConfig.from_dict(representation_config)
        if self.rep.normal_source == "features" and self.feature_normals is None:
            raise NearError(
                'normal_source "features" reads the normals of the input SLAT: give the renderer '
                "feature_normals {channels, mean, std} (stage-2 training fills it in)."
            )
        self.layout = GaussianLayout(self.rep.num_gaussians, color_feature_dim, n_extra_pbr, n_extra_light)
        self._build_trunk(num_blocks, mlp_ratio, qk_rms_norm_cross)
        self._build_view_embedding_and_heads()
        self._init_weights()

    def _build_trunk(self, num_blocks: int, mlp_ratio: float, qk_rms_norm_cross: bool) -> None:
        """The input layer (+ APE) and the ``num_blocks`` lighting-aware blocks."""
        if self.pe_mode == "ape":
            self.pos_embedder = AbsolutePositionEmbedder(self.model_channels)
        self.input_layer = nn.Linear(self.latent_channels, self.model_channels)
        block_args = {
            "token_channels": self.cond_channels,
            "mlp_ratio": mlp_ratio,
            "qk_rms_norm_cross": qk_rms_norm_cross,
        }
        self.blocks = nn.ModuleList(
            LightingAwareBlock(self.model_channels, self.num_heads, **block_args) for _ in range(num_blocks)
        )

    def _build_view_embedding_and_heads(self) -> None:
        """The view embedding, the Gaussian heads and the heads' offset buffer ``[K, 3]``.

        Flat published keys: the layers of the view embedding and of the heads are registered
        directly on self (ob_views_encoder, gs_out_layer, ...); the two helper modules are kept
        as plain attributes that share those layers.
        """
        view_embedding = ViewEmbedding(self.model_channels)
        heads = GaussianHeads(self.model_channels, self.layout, shared_read_out=shared_read_out(self.compat))
        for part in (view_embedding, heads):
            adopt_children(self, part)
        object.__setattr__(self, "view_embedding", view_embedding)
        object.__setattr__(self, "heads", heads)
        self.register_buffer(
            "offset_perturbation", hammersley_offsets(self.rep.num_gaussians, self.rep.voxel_size)
        )

    # -- configs -------------------------------------------------------------------------------
    @classmethod
    def paper_config(cls, **overrides: Any) -> dict[str, Any]:
        """Width 768, 6 blocks, 12 heads, K = 32, 16 registers, 32-d colour feature (published)."""
        base = {
            "resolution": 64,
            "model_channels": 768,
            "latent_channels": 768,
            "cond_channels": 768,
            "num_blocks": 6,
            "num_register_tokens": 16,
            "pretrained_decoder_path": None,
            "num_heads": 12,
            "num_head_channels": 64,
            "mlp_ratio": 4.0,
            "attn_mode": "full",
            "window_size": None,
            "pe_mode": "null",
            "use_fp16": False,
            "use_checkpoint": False,
            "qk_rms_norm": False,
            "qk_rms_norm_cross": False,
            "representation_config": {
                "lr": {"_xyz": 1.0, "_base_color": 1.0, "_scaling": 1.0, "_rotation": 0.1, "_opacity": 1.0},
                "perturb_offset": True,
                "voxel_size": 1.5,
                "num_gaussians": 32,
                "3d_filter_kernel_size": 9e-4,
                "scaling_bias": 4e-3,
                "opacity_bias": 0.1,
                "scaling_activation": "softplus",
            },
            "color_feature_dim": 32,
            "n_extra_pbr": 1,
            "n_extra_light": 2,
            "view_frame": "grid01",
            "view_direction_space": "world",
            "base_color_activation": "sh_dc",
            "compat": "published",
        }
        return merge_config(cls, base, overrides)

    @classmethod
    def tiny_config(cls, **overrides: Any) -> dict[str, Any]:
        """CPU-size: width 64, 2 blocks, 4 heads, K = 4, 8-d colour feature (~0.16M parameters);
        this project's layout (``compat="near"``)."""
        small = dict(model_channels=64, latent_channels=64, cond_channels=64, num_blocks=2, num_heads=4,
                     num_head_channels=16, num_register_tokens=4, color_feature_dim=8)  # fmt: skip
        base = cls.paper_config(compat="near", **small)
        base["representation_config"]["num_gaussians"] = 4
        return merge_config(cls, base, overrides)

    def _init_weights(self) -> None:
        """Xavier-uniform Linear weights, zero biases (TRELLIS ``initialize_weights``)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # representation_config keys that only change how scales are decoded or drawn (no retraining),
    # with their RepresentationConfig attribute
    DECODE_ONLY_OPTIONS = {
        "min_scale": "min_scale",
        "min_scale_axes": "min_scale_axes",
        "min_scale_mode": "min_scale_mode",
        "3d_filter_kernel_size": "filter_3d",
        "pixel_filter": "pixel_filter",
    }

    def update_representation(self, **options: Any) -> dict[str, Any]:
        """Set decode-only ``representation_config`` options of a built (e.g. loaded) model in
        place, keys as in its JSON (e.g. ``min_scale=0.8``): the decoding and the recorded config
        (what ``save_pretrained`` writes) both change. Returns the previous values of those keys
        (to restore them). Other keys are refused (they change the heads' layout, buffers or caches)."""
        bad = sorted(set(options) - set(self.DECODE_ONLY_OPTIONS))
        if bad:
            raise NearError(
                f"update_representation accepts only {list(self.DECODE_ONLY_OPTIONS)}, got {bad}."
            )
        previous = {k: getattr(self.rep, self.DECODE_ONLY_OPTIONS[k]) for k in options}
        rep = dict(self.near_config["args"].get("representation_config") or {})
        rep.update(options)
        self.rep = RepresentationConfig.from_dict(rep)  # validates
        self.near_config["args"]["representation_config"] = rep
        return previous

    # -- input handling --------------------------------------------------------------------------
    def _voxels(self, h: Any, coords: Tensor | None) -> tuple[Tensor, Tensor]:
        if coords is None:
            if not (hasattr(h, "feats") and hasattr(h, "coords")):
                raise NearError("Give voxel coords [N, 4] with the features, or a SparseTensor-like object.")
            h, coords = h.feats, h.coords
        if not isinstance(h, Tensor) or h.ndim != 2 or h.shape[1] != self.latent_channels:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise NearError(f"Voxel features must be [N, {self.latent_channels}], got {shape}.")
        if coords.ndim != 2 or coords.shape != (h.shape[0], 4) or coords.is_floating_point():
            raise NearError(
                f"Voxel coords must be integer [N, 4] (batch, x, y, z) matching {h.shape[0]} features, "
                f"got {tuple(coords.shape)} {coords.dtype}."
            )
        return h, coords

    def _check_context(self, name: str, t: Tensor, B: int | None) -> None:
        if t.ndim != 3 or t.shape[-1] != self.cond_channels or (B is not None and t.shape[0] not in (1, B)):
            want = "B or 1" if B is None else f"{B} or 1"
            raise NearError(
                f"The {name} must be [{want}, L, {self.cond_channels}] (one set per batch item/camera), "
                f"got {tuple(t.shape)}."
            )
        if t.shape[1] == 0:
            raise NearError(f"The {name} are empty; the decoder needs at least one token to attend to.")

    # -- cached parts ------------------------------------------------------------------------------
    def prepare_asset(
        self,
        h: Any,
        registers: Tensor,
        coords: Tensor | None = None,
        batch_size: int | None = None,
        slat_feats: Tensor | None = None,
    ) -> LADAssetCache:
        """Everything of the decoder that depends only on the asset (IAD output): computed once per asset.

        ``h`` ``[N, C_in]`` with ``coords [N, 4]`` (or a SparseTensor-like object), ``registers``
        ``[B or 1, R, C_ctx]``. ``batch_size`` is the number of items (cameras) the cache will be
        decoded for (default: the SparseTensor's batch size, else ``max(batch) + 1``).
        ``slat_feats`` ``[N, C_slat]``: the decoder's input SLAT features in the same voxel order,
        needed (only) with ``base_color_skip`` or ``feature_normals`` (:attr:`reads_slat_channels`).
        """
        if batch_size is None and coords is None and isinstance(getattr(h, "batch_size", None), int):
            batch_size = int(h.batch_size)
        h, coords = self._voxels(h, coords)
        voxel_bc = read_slat_channels("base_color_skip", self.base_color_skip, slat_feats, h.shape[0])
        if voxel_bc is not None:
            voxel_bc = voxel_bc.clamp(0.0, 1.0)
        feat_normals = read_slat_channels("feature_normals", self.feature_normals, slat_feats, h.shape[0])
        if batch_size is None:
            batch_size = int(coords[:, 0].max()) + 1 if coords.numel() else 1
        B = batch_size
        self._check_context("registers", registers, B)
        if coords.numel() and coords.device.type != "meta":
            b, xyz = coords[:, 0], coords[:, 1:]
            if int(b.min()) < 0 or int(b.max()) >= B:
                raise NearError(f"Voxel batch indices must lie in 0..{B - 1} (one camera per item).")
            if int(xyz.min()) < 0 or int(xyz.max()) >= self.resolution:
                raise NearError(f"Voxel coords must lie in 0..{self.resolution - 1}.")
        coords = coords.long()
        batch = coords[:, 0]
        inverse = None
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            order = torch.argsort(batch, stable=True)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            h, coords = h[order], coords[order]
            voxel_bc = None if voxel_bc is None else voxel_bc[order]
            feat_normals = None if feat_normals is None else feat_normals[order]
        x0 = self.input_layer(h)
        if self.pe_mode == "ape":
            x0 = x0 + self.pos_embedder(coords[:, 1:]).to(x0.dtype)
        voxels = SparseTensor(x0, coords.int(), batch_size=B)
        registers = registers.to(x0.dtype)
        return LADAssetCache(
            voxels=voxels,
            coords=coords,
            h_norm=F.layer_norm(h.float(), h.shape[-1:], eps=1e-5).to(h.dtype),
            register_kv=[blk.register_attn.context_kv(registers) for blk in self.blocks],
            inverse=inverse,
            **voxel_normals(coords, self.rep, self.resolution, feat_normals, h.dtype),
            voxel_base_color=voxel_bc,
        )

    @property
    def reads_slat_channels(self) -> bool:
        """Whether :meth:`prepare_asset` needs the input SLAT's features (``slat_feats``)."""
        return self.base_color_skip is not None or self.feature_normals is not None

    def prepare_lighting(self, light_tokens: Tensor) -> LADLightingCache:
        """The keys/values of the lighting tokens ``[B or 1, N_L, C_ctx]`` for every block (once per lighting)."""
        self._check_context("light tokens", light_tokens, None)
        dtype = self.input_layer.weight.dtype
        return LADLightingCache(
            light_kv=[blk.cross_attn.context_kv(light_tokens.to(dtype)) for blk in self.blocks],
            batch_size=int(light_tokens.shape[0]),
        )

    # -- forward -----------------------------------------------------------------------------------
    def lighting_features(
        self, asset: LADAssetCache, lighting: LADLightingCache, viewmats: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(view embedding e [N, C], h_e [N, C])`` in the cache's (batch-sorted) voxel order."""
        check_viewmats(viewmats)
        B = asset.batch_size
        if viewmats.shape[0] != B:
            raise NearError(
                f"Got {viewmats.shape[0]} cameras for an asset batch of {B} items; give one camera per item."
            )
        if lighting.batch_size not in (1, B):
            raise NearError(
                f"The light tokens hold {lighting.batch_size} lightings for {B} batch items; give 1 or {B}."
            )
        x0 = asset.voxels
        centres = voxel_centres(asset.coords[:, 1:], self.resolution, self.view_frame, x0.dtype)
        dirs, dists = view_rays(
            centres, asset.coords[:, 0], viewmats, self.view_direction_space, self.centre_method
        )
        e = self.view_embedding(dirs, dists)
        x = x0.replace(x0.feats + e)
        for block, reg_kv, light_kv in zip(self.blocks, asset.register_kv, lighting.light_kv):
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                feats = torch.utils.checkpoint.checkpoint(
                    lambda f, r, l, blk=block, t=x: blk(t.replace(f), r, l).feats,
                    x.feats,
                    reg_kv,
                    light_kv,
                    use_reentrant=False,
                )
                x = x.replace(feats)
            else:
                x = block(x, reg_kv, light_kv)
        return e, x.feats

    def decode(
        self, asset: LADAssetCache, lighting: LADLightingCache, viewmats: Tensor
    ) -> RelightableGaussians:
        """Relightable Gaussians of a prepared asset under a prepared lighting, seen by ``viewmats [B, 4, 4]``.

        The Gaussians come in the voxel order of the input given to :meth:`prepare_asset`.
        """
        e, h_e = self.lighting_features(asset, lighting, viewmats)
        raw = self.heads(asset.h_norm + e, F.layer_norm(h_e.float(), h_e.shape[-1:], eps=1e-5).to(h_e.dtype))
        g = decode_gaussians(
            raw,
            asset.coords,
            self.rep,
            self.layout,
            self.offset_perturbation,
            camera_centres(viewmats.to(h_e.dtype), self.centre_method),
            orient_offset=frame_offset(self.view_frame),
            resolution=self.resolution,
            base_color_activation=self.base_color_activation,
            voxel_normals=asset.voxel_normals,
            normals_oriented=asset.voxel_normals_oriented,
            voxel_base_color=asset.voxel_base_color,
        )
        if asset.inverse is not None:
            K = self.layout.num_gaussians
            idx = (asset.inverse[:, None] * K + torch.arange(K, device=asset.inverse.device)).reshape(-1)
            g = g.select(idx)
        return g

    def forward(
        self,
        h: Any,
        registers: Tensor,
        light_tokens: Tensor,
        viewmats: Tensor,
        coords: Tensor | None = None,
        slat_feats: Tensor | None = None,
    ) -> RelightableGaussians:
        """Relightable Gaussians for every voxel (K each), seen by ``viewmats[batch]`` under the lights.

        ``h`` ``[N, C_in]`` with ``coords`` ``[N, 4]`` (or a SparseTensor), ``registers``
        ``[B or 1, R, C_ctx]``, ``light_tokens`` ``[B or 1, N_L, C_ctx]``, ``viewmats [B, 4, 4]``.
        Same as ``decode(prepare_asset(...), prepare_lighting(...), viewmats)``.
        """
        check_viewmats(viewmats)
        self._check_context("registers", registers, viewmats.shape[0])
        self._check_context("light tokens", light_tokens, viewmats.shape[0])
        asset = self.prepare_asset(h, registers, coords, batch_size=viewmats.shape[0], slat_feats=slat_feats)
        return self.decode(asset, self.prepare_lighting(light_tokens), viewmats)
