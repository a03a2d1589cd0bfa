"""The SLAT rectified-flow velocity model; TRELLIS ``SLatFlowModel`` checkpoints load and run on it.

Data path of ``forward(x, t, cond)`` for the published image-large configuration (64³ grid, 8
latent channels, width 1024, 24 blocks, one 128-channel IO stage, so patch 2)::

    x [N, 8] -> input_layer -> [N, 128]
      -> input_blocks: res block, res block + 2x pooling -> [~N/4, 1024] at 32³
      -> + absolute position features of the coarse voxels
      -> blocks: 24 time-modulated DiT blocks (self-attention, cross-attention to cond, MLP)
      -> out_blocks: res block + 2x unpooling on [h, skip], res block on [h, skip] -> [N, 128]
      -> LayerNorm (no weights) -> out_layer -> v [N, 8]

``t`` is 1000 x the flow time (as the sampler passes it); ``cond`` the image tokens
``[B, T, cond_channels]`` (B may be 1 for a batch of voxel sets). ``compat`` picks the pooling
divisor (:mod:`.compat`): published TRELLIS weights need ``"published"``, the default.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import NearError
from ..sparse import LayerNorm32, SparseConv3d, SparseDownsample, SparseLinear, SparseTensor, SparseUpsample
from .blocks import (
    NORM_EPS,
    AbsolutePositionEmbedder,
    ModulatedSparseTransformerCrossBlock,
    TimestepEmbedder,
    modulate,
)
from .compat import DEFAULT_COMPAT, check_compat, pool_divisor
from .precision import set_layer_precision
from .registry import register_model

# The published ``trellis-image-large`` SLAT flow (~600M parameters) and our few-MB CPU variant of
# the same structure; ``paper_config`` / ``tiny_config`` return copies with overrides applied.
IMAGE_LARGE_ARGS: dict[str, Any] = {
    "resolution": 64, "in_channels": 8, "out_channels": 8, "model_channels": 1024,
    "cond_channels": 1024, "num_blocks": 24, "num_heads": 16, "mlp_ratio": 4, "patch_size": 2,
    "num_io_res_blocks": 2, "io_block_channels": [128], "pe_mode": "ape", "qk_rms_norm": True,
    "use_fp16": False, "compat": "published",
}  # fmt: skip
TINY_ARGS: dict[str, Any] = {
    **IMAGE_LARGE_ARGS, "model_channels": 64, "cond_channels": 64, "num_blocks": 2, "num_heads": 4,
    "io_block_channels": [32], "compat": "near",
}  # fmt: skip


def _silu(x: SparseTensor) -> SparseTensor:
    return x.replace(F.silu(x.feats))


def _resampler(kind: str | None, divisor: str) -> nn.Module | None:
    """The 2x scale change a residual block applies to its input first ("down", "up" or None)."""
    if kind is None:
        return None
    if kind == "down":
        return SparseDownsample(2, divisor=divisor)
    if kind == "up":
        return SparseUpsample(2)
    raise NearError(f"A residual block resamples 'down', 'up' or not at all (None); got {kind!r}.")


class SparseResBlock3d(nn.Module):
    """Time-conditioned residual block of two 3x3x3 sparse convolutions.

    ``resample`` "down" first pools 2x2x2 children into their parent (dividing by ``divisor``),
    "up" first restores the fine voxels of the matching pooling. Parameters: ``norm1`` (affine
    LayerNorm), ``conv1.conv``, ``norm2`` (plain LayerNorm, then scaled and shifted by
    ``emb_layers.1`` = Linear(emb, 2 out)), ``conv2.conv`` (zero at initialisation) and
    ``skip_connection`` (a SparseLinear where the width changes, else identity).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        resample: str | None = None,
        divisor: str = "count",
    ) -> None:
        super().__init__()
        width = out_channels or channels
        self.channels, self.out_channels = channels, width
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=NORM_EPS)
        self.norm2 = LayerNorm32(width, elementwise_affine=False, eps=NORM_EPS)
        self.conv1 = SparseConv3d(channels, width, 3)
        self.conv2 = SparseConv3d(width, width, 3)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * width))
        self.skip_connection = nn.Identity() if width == channels else SparseLinear(channels, width)
        self.resample = _resampler(resample, divisor)
        with torch.no_grad():
            for p in self.conv2.parameters():
                p.zero_()

    def forward(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        """``x`` voxel features ``[N, channels]``, ``emb`` the time token ``[B, emb_channels]``."""
        scale, shift = self.emb_layers(emb).type(x.dtype).chunk(2, dim=1)
        if self.resample is not None:
            x = self.resample(x)
        h = self.conv1(_silu(self.norm1(x)))
        h = self.conv2(_silu(modulate(self.norm2(h), shift, scale)))
        return h + self.skip_connection(x)


def _pooling_stages(widths: list[int], model_channels: int, per_stage: int, divisor: str) -> nn.ModuleList:
    """Fine-to-coarse IO stages: at each width ``per_stage - 1`` plain blocks, then one that pools
    and widens to the next width (the last one to ``model_channels``)."""
    stages: list[nn.Module] = []
    for i, width in enumerate(widths):
        next_width = widths[i + 1] if i + 1 < len(widths) else model_channels
        stages += [SparseResBlock3d(width, model_channels, width) for _ in range(per_stage - 1)]
        stages.append(SparseResBlock3d(width, model_channels, next_width, resample="down", divisor=divisor))
    return nn.ModuleList(stages)


def _unpooling_stages(
    widths: list[int], model_channels: int, per_stage: int, with_skips: bool
) -> nn.ModuleList:
    """Coarse-to-fine mirror of :func:`_pooling_stages`; with skips each block's input is twice as
    wide (its input concatenated with the matching pooling-side output)."""
    k = 2 if with_skips else 1
    stages: list[nn.Module] = []
    coarse_first = widths[::-1]
    for i, width in enumerate(coarse_first):
        incoming = model_channels if i == 0 else coarse_first[i - 1]
        stages.append(SparseResBlock3d(k * incoming, model_channels, width, resample="up"))
        stages += [SparseResBlock3d(k * width, model_channels, width) for _ in range(per_stage - 1)]
    return nn.ModuleList(stages)


def _head_count(model_channels: int, num_heads: int | None, num_head_channels: int | None) -> int:
    if num_heads is not None:
        return num_heads
    if not num_head_channels:
        raise NearError("Give num_heads or num_head_channels.")
    return model_channels // num_head_channels


@register_model("SLatFlowModel", "ElasticSLatFlowModel")
class SLatFlowModel(nn.Module):
    """Rectified-flow velocity model on structured latents (constructor arguments and parameter
    keys as in published TRELLIS checkpoints, plus ``compat``)."""

    def __init__(
        self,
        resolution: int,
        in_channels: int,
        out_channels: int,
        model_channels: int,
        cond_channels: int,
        num_blocks: int,
        *,
        io_block_channels: list[int] | None = None,
        num_io_res_blocks: int = 2,
        patch_size: int = 2,
        use_skip_connection: bool = True,
        num_heads: int | None = None,
        num_head_channels: int | None = 64,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        mlp_ratio: float = 4,
        share_mod: bool = False,
        pe_mode: str = "ape",
        compat: str = DEFAULT_COMPAT,
        use_fp16: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if pe_mode == "rope":
            raise NearError("pe_mode='rope' is not implemented (the published SLAT flows use 'ape').")
        if pe_mode != "ape":
            raise NearError(f"pe_mode must be 'ape' or 'rope', got {pe_mode!r}.")
        io = list(io_block_channels or [])
        if io_block_channels is not None and 2 ** len(io) != patch_size:
            raise NearError(
                f"patch_size {patch_size} must equal 2 ** len(io_block_channels) = {2 ** len(io)}."
            )
        self.compat = check_compat(compat)
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.cond_channels = model_channels, cond_channels
        self.use_skip_connection, self.share_mod = use_skip_connection, share_mod
        self.pe_mode = pe_mode
        self.use_fp16, self.dtype = False, torch.float32

        # registration order fixes the order of random initialisation; keep it
        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        self.input_layer = SparseLinear(in_channels, io[0] if io else model_channels)
        self.input_blocks = _pooling_stages(io, model_channels, num_io_res_blocks, pool_divisor(compat))
        heads = _head_count(model_channels, num_heads, num_head_channels)
        self.blocks = nn.ModuleList(
            ModulatedSparseTransformerCrossBlock(
                model_channels,
                cond_channels,
                heads,
                mlp_ratio=mlp_ratio,
                share_mod=share_mod,
                qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross,
                use_checkpoint=use_checkpoint,
            )  # fmt: skip
            for _ in range(num_blocks)
        )
        self.out_blocks = _unpooling_stages(io, model_channels, num_io_res_blocks, use_skip_connection)
        self.out_layer = SparseLinear(io[0] if io else model_channels, out_channels)

        self.initialize_weights()
        if use_fp16:
            self.convert_to_fp16()

    # ------------------------------------------------------------------ configs
    @classmethod
    def paper_config(cls, **overrides: Any) -> dict[str, Any]:
        """Constructor kwargs of the published ``trellis-image-large`` SLAT flow (~600M params)."""
        return {**IMAGE_LARGE_ARGS, **overrides}

    @classmethod
    def tiny_config(cls, **overrides: Any) -> dict[str, Any]:
        """A few-MB configuration with the same structure, for CPU training and tests."""
        return {**TINY_ARGS, **overrides}

    # ------------------------------------------------------------------ precision and init
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _set_precision(self, dtype: torch.dtype) -> None:
        for part in (self.input_blocks, self.blocks, self.out_blocks):
            set_layer_precision(part, dtype)
        self.use_fp16, self.dtype = dtype == torch.float16, dtype

    def convert_to_fp16(self) -> None:
        """Run the IO stages and the transformer in float16 (norms stay float32), as published."""
        self._set_precision(torch.float16)

    def initialize_weights(self) -> None:
        """Xavier-uniform linear weights with zero biases, N(0, 0.02) for the time MLP, zeros for
        the modulation outputs and the output layer (so a fresh model predicts zero velocity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for i in (0, 2):
            nn.init.normal_(self.t_embedder.mlp[i].weight, std=0.02)
        owners = [self] if self.share_mod else list(self.blocks)
        zeroed = [owner.adaLN_modulation[-1] for owner in owners] + [self.out_layer]
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ forward
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
        grid = x.coords[:, 1:]
        if len(x) and (int(grid.min()) < 0 or int(grid.max()) >= self.resolution):
            raise NearError(
                f"Voxel coords must lie in [0, {self.resolution}); got {int(grid.min())}..{int(grid.max())}."
            )

    def _time_token(self, t: torch.Tensor) -> torch.Tensor:
        token = self.t_embedder(t)
        if self.share_mod:
            token = self.adaLN_modulation(token)
        return token.type(self.dtype)

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        """Velocity ``v [N, out_channels]`` at the voxels of ``x`` (t [B] = 1000 * flow time)."""
        self._check_inputs(x, t, cond)
        time = self._time_token(t.expand(x.batch_size) if t.shape[0] == 1 else t)
        cond = cond.type(self.dtype)
        h = self.input_layer(x).type(self.dtype)
        pooled_side: list[torch.Tensor] = []
        for stage in self.input_blocks:
            h = stage(h, time)
            pooled_side.append(h.feats)
        h = h.replace(h.feats + self.pos_embedder(h.coords[:, 1:]).type(self.dtype))
        for block in self.blocks:
            h = block(h, time, cond)
        for stage in self.out_blocks:
            skip = pooled_side.pop()
            h = stage(h.replace(torch.cat((h.feats, skip), dim=1)) if self.use_skip_connection else h, time)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        return self.out_layer(h.type(x.dtype))
