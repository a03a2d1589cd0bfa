"""The SLAT rectified-flow transformer (TRELLIS ``SLatFlowModel``), key-for-key compatible.

Data path for ``forward(x, t, cond)`` with the published image-large config (64³ grid, 8 latent
channels, width 1024, 24 blocks, patch 2 through one 128-channel IO stage):

    x [N, 8] --input_layer--> [N, 128] --input_blocks (res, res+down)--> [N/~4, 1024] @ 32³
      + APE(coords) --24 x adaLN DiT blocks (self-attn w/ qk RMS-norm, cross-attn to cond)-->
      --out_blocks (res+up on [h, skip], res on [h, skip])--> [N, 128] --LN, out_layer--> [N, 8]

``t`` is the flow time already multiplied by 1000 (as TRELLIS' sampler passes it); ``cond`` are
the image-condition tokens ``[B, T, cond_channels]`` (B may be 1 for a batch of voxel sets).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import NearError
from ..sparse import LayerNorm32, SparseConv3d, SparseDownsample, SparseLinear, SparseTensor, SparseUpsample
from ..sparse.conv import SubMConv3d
from .blocks import AbsolutePositionEmbedder, ModulatedSparseTransformerCrossBlock, TimestepEmbedder
from .registry import register_model

FP16_MODULES = (nn.Linear, SubMConv3d)


def convert_module_to_f16(m: nn.Module) -> None:
    """Cast the parameters of linear and conv layers to float16 (norms stay float32), as TRELLIS."""
    if isinstance(m, FP16_MODULES):
        for p in m.parameters():
            p.data = p.data.half()


def convert_module_to_f32(m: nn.Module) -> None:
    if isinstance(m, FP16_MODULES):
        for p in m.parameters():
            p.data = p.data.float()


class SparseResBlock3d(nn.Module):
    """Sparse conv residual block with time modulation, optional 2x down/up-sampling first.

    Keys: ``norm1`` (affine), ``conv1.conv``, ``conv2.conv`` (zero-init), ``emb_layers.1``
    (Linear(emb, 2 out) -> scale, shift), ``skip_connection`` (SparseLinear when channels change).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        downsample: bool = False,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        if downsample and upsample:
            raise NearError("A residual block cannot both down- and up-sample.")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(self.out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, self.out_channels, 3)
        self.conv2 = SparseConv3d(self.out_channels, self.out_channels, 3)
        for p in self.conv2.parameters():
            nn.init.zeros_(p)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels, bias=True))
        self.skip_connection = (
            SparseLinear(channels, self.out_channels) if channels != self.out_channels else nn.Identity()
        )
        self.updown: nn.Module | None = None
        if downsample:
            self.updown = SparseDownsample(2)
        elif upsample:
            self.updown = SparseUpsample(2)

    def forward(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        scale, shift = self.emb_layers(emb).type(x.dtype).chunk(2, dim=1)
        if self.updown is not None:
            x = self.updown(x)
        h = self.norm1(x)
        h = self.conv1(h.replace(F.silu(h.feats)))
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(h.replace(F.silu(h.feats)))
        return h + self.skip_connection(x)


@register_model("SLatFlowModel", "ElasticSLatFlowModel")
class SLatFlowModel(nn.Module):
    """Rectified-flow velocity model on structured latents (TRELLIS structure and key names)."""

    def __init__(
        self,
        resolution: int,
        in_channels: int,
        model_channels: int,
        cond_channels: int,
        out_channels: int,
        num_blocks: int,
        num_heads: int | None = None,
        num_head_channels: int | None = 64,
        mlp_ratio: float = 4,
        patch_size: int = 2,
        num_io_res_blocks: int = 2,
        io_block_channels: list[int] | None = None,
        pe_mode: str = "ape",
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        use_skip_connection: bool = True,
        share_mod: bool = False,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
    ) -> None:
        super().__init__()
        if pe_mode not in ("ape", "rope"):
            raise NearError(f"pe_mode must be 'ape' or 'rope', got {pe_mode!r}.")
        if pe_mode == "rope":
            raise NearError("pe_mode='rope' is not implemented (the published SLAT flows use 'ape').")
        if num_heads is None:
            if not num_head_channels:
                raise NearError("Give num_heads or num_head_channels.")
            num_heads = model_channels // num_head_channels
        if io_block_channels is not None:
            io_block_channels = list(io_block_channels)
            if 2 ** len(io_block_channels) != patch_size:
                raise NearError(
                    f"patch_size {patch_size} must equal 2 ** len(io_block_channels) "
                    f"= {2 ** len(io_block_channels)}."
                )
        self.resolution = resolution
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.cond_channels = cond_channels
        self.out_channels = out_channels
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.patch_size = patch_size
        self.num_io_res_blocks = num_io_res_blocks
        self.io_block_channels = io_block_channels
        self.pe_mode = pe_mode
        self.use_fp16 = use_fp16
        self.use_checkpoint = use_checkpoint
        self.use_skip_connection = use_skip_connection
        self.share_mod = share_mod
        self.qk_rms_norm = qk_rms_norm
        self.qk_rms_norm_cross = qk_rms_norm_cross
        self.dtype = torch.float16 if use_fp16 else torch.float32

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(
                nn.SiLU(), nn.Linear(model_channels, 6 * model_channels, bias=True)
            )
        if pe_mode == "ape":
            self.pos_embedder = AbsolutePositionEmbedder(model_channels)

        io = io_block_channels
        self.input_layer = SparseLinear(in_channels, model_channels if io is None else io[0])
        self.input_blocks = nn.ModuleList()
        if io is not None:
            for chs, next_chs in zip(io, [*io[1:], model_channels]):
                self.input_blocks.extend(
                    SparseResBlock3d(chs, model_channels, out_channels=chs)
                    for _ in range(num_io_res_blocks - 1)
                )
                self.input_blocks.append(
                    SparseResBlock3d(chs, model_channels, out_channels=next_chs, downsample=True)
                )
        self.blocks = nn.ModuleList(
            ModulatedSparseTransformerCrossBlock(
                model_channels,
                cond_channels,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                attn_mode="full",
                use_checkpoint=use_checkpoint,
                share_mod=share_mod,
                qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross,
            )  # fmt: skip
            for _ in range(num_blocks)
        )
        self.out_blocks = nn.ModuleList()
        if io is not None:
            skip = 2 if use_skip_connection else 1
            for chs, prev_chs in zip(reversed(io), [model_channels, *reversed(io[1:])]):
                self.out_blocks.append(
                    SparseResBlock3d(prev_chs * skip, model_channels, out_channels=chs, upsample=True)
                )
                self.out_blocks.extend(
                    SparseResBlock3d(chs * skip, model_channels, out_channels=chs)
                    for _ in range(num_io_res_blocks - 1)
                )
        self.out_layer = SparseLinear(model_channels if io is None else io[0], out_channels)

        self.initialize_weights()
        if use_fp16:
            self.convert_to_fp16()

    # ------------------------------------------------------------------ configs
    @classmethod
    def paper_config(cls, **overrides: Any) -> dict[str, Any]:
        """Constructor kwargs of the published ``trellis-image-large`` SLAT flow (~600M params)."""
        cfg: dict[str, Any] = dict(
            resolution=64, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
            num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=2, num_io_res_blocks=2,
            io_block_channels=[128], pe_mode="ape", qk_rms_norm=True, use_fp16=False,
        )  # fmt: skip
        cfg.update(overrides)
        return cfg

    @classmethod
    def tiny_config(cls, **overrides: Any) -> dict[str, Any]:
        """A few-MB configuration with the same structure, for CPU training and tests."""
        cfg: dict[str, Any] = dict(
            resolution=64, in_channels=8, out_channels=8, model_channels=64, cond_channels=64,
            num_blocks=2, num_heads=4, mlp_ratio=4, patch_size=2, num_io_res_blocks=2,
            io_block_channels=[32], pe_mode="ape", qk_rms_norm=True, use_fp16=False,
        )  # fmt: skip
        cfg.update(overrides)
        return cfg

    @classmethod
    def named_config(cls, name: str, **overrides: Any) -> dict[str, Any]:
        """Kwargs of a named config: "trellis-image-large" or "tiny"."""
        table = {"trellis-image-large": cls.paper_config, "tiny": cls.tiny_config}
        if name not in table:
            raise NearError(f"Unknown SLAT flow config {name!r}; choose one of {sorted(table)}.")
        return table[name](**overrides)

    # ------------------------------------------------------------------ utilities
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def convert_to_fp16(self) -> None:
        for part in (self.input_blocks, self.blocks, self.out_blocks):
            part.apply(convert_module_to_f16)
        self.use_fp16, self.dtype = True, torch.float16

    def convert_to_fp32(self) -> None:
        for part in (self.input_blocks, self.blocks, self.out_blocks):
            part.apply(convert_module_to_f32)
        self.use_fp16, self.dtype = False, torch.float32

    def initialize_weights(self) -> None:
        """TRELLIS init: xavier linears, N(0, 0.02) time MLP, zero adaLN and output layer."""

        def basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(basic)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        mods = [self.adaLN_modulation] if self.share_mod else [b.adaLN_modulation for b in self.blocks]
        for m in mods:
            nn.init.zeros_(m[-1].weight)
            nn.init.zeros_(m[-1].bias)
        nn.init.zeros_(self.out_layer.weight)
        nn.init.zeros_(self.out_layer.bias)

    def _check_inputs(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> None:
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise NearError(
                f"SLatFlowModel expects x feats [N, {self.in_channels}]; got {tuple(x.feats.shape)}."
            )
        if t.dim() != 1 or t.shape[0] not in (1, x.batch_size):
            raise NearError(
                f"SLatFlowModel expects t [B={x.batch_size}] (times x 1000); got {tuple(t.shape)}."
            )
        if cond.dim() != 3 or cond.shape[-1] != self.cond_channels or cond.shape[0] not in (1, x.batch_size):
            raise NearError(
                f"SLatFlowModel expects cond [B, T, {self.cond_channels}] with B in (1, {x.batch_size}); "
                f"got {tuple(cond.shape)}."
            )
        c = x.coords[:, 1:]
        if len(x) and (int(c.min()) < 0 or int(c.max()) >= self.resolution):
            raise NearError(
                f"Voxel coords must lie in [0, {self.resolution}); got {int(c.min())}..{int(c.max())}."
            )

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        """Velocity ``v [N, out_channels]`` at the voxels of ``x`` (t [B] = 1000 * flow time)."""
        self._check_inputs(x, t, cond)
        if t.shape[0] == 1 and x.batch_size > 1:
            t = t.expand(x.batch_size)
        h = self.input_layer(x).type(self.dtype)
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb = t_emb.type(self.dtype)
        cond = cond.type(self.dtype)

        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb)
            skips.append(h.feats)
        if self.pe_mode == "ape":
            h = h.replace(h.feats + self.pos_embedder(h.coords[:, 1:]).type(self.dtype))
        for block in self.blocks:
            h = block(h, t_emb, cond)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            if self.use_skip_connection:
                h = block(h.replace(torch.cat([h.feats, skip], dim=1)), t_emb)
            else:
                h = block(h, t_emb)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        return self.out_layer(h.type(x.dtype))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(math.prod(p.shape) for p in model.parameters())
