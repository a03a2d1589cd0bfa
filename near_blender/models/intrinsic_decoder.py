"""Intrinsic-Aware Decoder D_I (paper 3.5.1 and A.2; published model ``decoder``, class
``SLatGaussianDecoder``): LH-SLAT -> view- and light-independent intrinsic features ``h`` plus
register tokens.

Input: a :class:`~near_blender.sparse.SparseTensor` ``x`` with ``feats [N, latent_channels]``
(published: 8) at ``coords [N, 4]`` = (batch, x, y, z), x/y/z in ``0..resolution-1`` of the 64^3
grid of the object box [-0.5, 0.5]^3 (Z up). Output ``(h, registers)``: ``h`` a SparseTensor on the
same voxels with ``feats [N, model_channels]`` (no final norm: the lighting-aware decoder
normalizes it), ``registers [B, R, model_channels]``.

Data flow (TRELLIS sparse transformer plus registers)::

    h = input_layer(x) + APE(coords)                      (pe_mode "ape"; "null": no APE)
    r = reg_tokens.expand(B, R, C)                         (learned, [1, R, C])
    for block i (shift s_i = 0 on even, window/2 on odd blocks):
        [aggregate only]  r += register_gather(LN(r), LN(h))        registers read their item's voxels
        h += register_attn(LN(h), r)                       voxels read the registers (cross-attention)
        h += attn(LN(h))                                    Swin self-attention, window 8, shift s_i
        h += mlp(LN(h))                                     FFN 4x, tanh-GELU

LayerNorms are non-affine (eps 1e-6, float32), attention never crosses batch items (nor, for the
Swin attention, windows ``floor((coord + s_i) / window)``).

``register_mode``:

* ``"read"`` (default, the published design and weights): the blocks only *read* the learned
  register tokens; the registers returned are ``reg_tokens`` broadcast to the batch, unchanged.
  Information then moves only within Swin windows (8^3 voxels, shifted by 4 every other block).
* ``"aggregate"`` (the paper's "global information bridge"): at the start of every block each
  item's registers attend to *all* voxels of their item and are updated residually,
  ``r <- r + to_out(softmax(q(LN r) k(LN h)^T / sqrt(d)) v(LN h))`` (multi-head, registers as
  queries, voxels as keys/values; one extra ``blocks.<i>.register_gather`` cross-attention per
  block, 4 C^2 + 4 C parameters). The voxels then read the updated registers in the same block,
  so one block already carries information between any two voxels of an item. The registers
  returned are the updated ones after the last block.

State-dict keys (published): ``input_layer``, ``reg_tokens``,
``blocks.<i>.{register_attn.{to_q,to_kv,to_out}, attn.{to_qkv,to_out}, mlp.mlp.{0,2}}``; the
non-affine norms hold no tensors. At width 768 with 12 blocks, 16 registers and 8 latent channels
the model holds 113,385,216 parameters (12 x 9,447,168 in the blocks + 6,912 input layer + 12,288
registers; the paper: 113.4M).

Note: TRELLIS' own VAE Gaussian decoder is also called ``SLatGaussianDecoder`` (it has an
``out_layer`` and no ``reg_tokens``); the NeAR release reuses the name for this module, and the
registry maps the name to this class.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .. import NearError
from ..sparse import LayerNorm32, SparseLinear, SparseTensor, varlen_attention
from .blocks import AbsolutePositionEmbedder, SparseFeedForwardNet, SparseMultiHeadAttention, swin_shift
from .model_config import merge_config
from .precision import set_layer_precision
from .registry import register_model

REGISTER_MODES = ("read", "aggregate")


class RegisterGather(nn.Module):
    """Registers of item b attend to the voxels of item b: ``[B, R, C]`` x voxels -> ``[B, R, C]``.

    Keys ``to_q`` (C -> C), ``to_kv`` (C -> 2C, k then v, head-major), ``to_out`` (TRELLIS layout).
    """

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if channels % num_heads:
            raise NearError(f"channels ({channels}) must be divisible by num_heads ({num_heads}).")
        self.channels, self.num_heads, self.head_dim = channels, num_heads, channels // num_heads
        self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
        self.to_kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, registers: Tensor, voxels: SparseTensor) -> Tensor:
        B, R, C = registers.shape
        H, D = self.num_heads, self.head_dim
        if B != voxels.batch_size:
            raise NearError(f"register_gather: {B} register sets for {voxels.batch_size} voxel sets.")
        q = self.to_q(registers).reshape(B * R, H, D)
        k, v = self.to_kv(voxels.feats).reshape(-1, 2, H, D).unbind(1)
        out = varlen_attention(q, k, v, [R] * B, voxels.seqlens)
        return self.to_out(out.reshape(B, R, C))


class IntrinsicBlock(nn.Module):
    """One IAD block (see the module docstring); ``forward(h, registers) -> (h, registers)``."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "swin",
        window_size: int | None = 8,
        shift_window: int = 0,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        aggregate_registers: bool = False,
    ) -> None:
        super().__init__()
        # Published order: norm3 before the register attention, norm1 before self-attention,
        # norm2 before the FFN (non-affine: the names carry no tensors).
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.attn = SparseMultiHeadAttention(
            channels, num_heads, type="self", attn_mode=attn_mode,
            window_size=window_size if attn_mode != "full" else None,
            shift_window=shift_window, qk_rms_norm=qk_rms_norm,
        )  # fmt: skip
        self.register_attn = SparseMultiHeadAttention(
            channels, num_heads, ctx_channels=channels, type="cross", qk_rms_norm=qk_rms_norm_cross
        )
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)
        self.aggregate_registers = aggregate_registers
        if aggregate_registers:
            self.register_gather = RegisterGather(channels, num_heads)

    def forward(self, h: SparseTensor, registers: Tensor) -> tuple[SparseTensor, Tensor]:
        hn = self.norm3(h)
        if self.aggregate_registers:
            rn = torch.nn.functional.layer_norm(registers.float(), registers.shape[-1:], eps=1e-6)
            registers = registers + self.register_gather(rn.to(registers.dtype), hn)
        h = h + self.register_attn(hn, registers)
        h = h + self.attn(self.norm1(h))
        h = h + self.mlp(self.norm2(h))
        return h, registers


@register_model("SLatGaussianDecoder", "IntrinsicAwareDecoder")
class IntrinsicAwareDecoder(nn.Module):
    """The intrinsic-aware decoder (see the module docstring).

    Constructor arguments are the published ones plus ``register_mode`` (``"read"`` |
    ``"aggregate"``). Accepted for checkpoint-JSON compatibility without effect:
    ``pretrained_decoder_path`` (weights come from the checkpoint file) and
    ``representation_config`` (this module outputs features, not Gaussians). ``cond_channels``
    is the width of the register tokens the blocks attend to and must equal ``model_channels``.
    """

    PUBLISHED_NAME = "SLatGaussianDecoder"

    def __init__(
        self,
        resolution: int = 64,
        model_channels: int = 768,
        latent_channels: int = 8,
        cond_channels: int = 768,
        num_blocks: int = 12,
        num_register_tokens: int = 16,
        pretrained_decoder_path: str | None = None,
        num_heads: int | None = None,
        num_head_channels: int | None = 64,
        mlp_ratio: float = 4.0,
        attn_mode: str = "swin",
        window_size: int | None = 8,
        pe_mode: str = "ape",
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        representation_config: dict[str, Any] | None = None,
        register_mode: str = "read",
    ) -> None:
        super().__init__()
        if register_mode not in REGISTER_MODES:
            raise NearError(f"register_mode must be one of {REGISTER_MODES}, got {register_mode!r}.")
        if pe_mode not in ("ape", "null"):
            raise NearError(f"The intrinsic-aware decoder supports pe_mode 'ape' or 'null', got {pe_mode!r}.")
        if attn_mode not in ("swin", "full"):
            raise NearError(
                f"The intrinsic-aware decoder supports attn_mode 'swin' or 'full', got {attn_mode!r}."
            )
        if attn_mode == "swin" and not window_size:
            raise NearError("Swin attention needs a window_size (published: 8).")
        if cond_channels != model_channels:
            raise NearError(
                f"cond_channels ({cond_channels}) must equal model_channels ({model_channels}): "
                "the blocks attend to the decoder's own register tokens."
            )
        if resolution < 1 or model_channels < 1 or latent_channels < 1 or num_blocks < 0:
            raise NearError(
                "resolution, model_channels and latent_channels must be positive, num_blocks >= 0."
            )
        if num_register_tokens < 1:
            raise NearError(f"The decoder needs at least one register token, got {num_register_tokens}.")
        if num_heads is None:
            if not num_head_channels:
                raise NearError("Give num_heads or num_head_channels.")
            num_heads = model_channels // num_head_channels
        self.resolution, self.model_channels = resolution, model_channels
        self.latent_channels, self.cond_channels = latent_channels, cond_channels
        self.num_blocks, self.num_heads, self.mlp_ratio = num_blocks, num_heads, mlp_ratio
        self.num_register_tokens = num_register_tokens
        self.attn_mode, self.window_size, self.pe_mode = attn_mode, window_size, pe_mode
        self.use_checkpoint, self.register_mode = use_checkpoint, register_mode
        self.pretrained_decoder_path = pretrained_decoder_path
        self.representation_config = representation_config
        self.use_fp16, self.dtype = False, torch.float32

        if pe_mode == "ape":
            self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        self.input_layer = SparseLinear(latent_channels, model_channels)
        self.blocks = nn.ModuleList(
            IntrinsicBlock(
                model_channels,
                num_heads,
                mlp_ratio,
                attn_mode,
                window_size=window_size,
                shift_window=swin_shift(i, window_size) if attn_mode == "swin" else 0,
                qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross,
                aggregate_registers=register_mode == "aggregate",
            )  # fmt: skip
            for i in range(num_blocks)
        )
        self.reg_tokens = nn.Parameter(torch.randn(1, num_register_tokens, model_channels))
        self.initialize_weights()
        if use_fp16:
            self.convert_to_fp16()

    # -- configs -------------------------------------------------------------------------------
    @classmethod
    def paper_config(cls, **overrides: Any) -> dict[str, Any]:
        """Published sizes: width 768, 12 blocks of 12 heads, Swin window 8, 16 registers, latent 8."""
        base = {
            "resolution": 64,
            "model_channels": 768,
            "latent_channels": 8,
            "cond_channels": 768,
            "num_blocks": 12,
            "num_register_tokens": 16,
            "pretrained_decoder_path": None,
            "num_heads": 12,
            "num_head_channels": 64,
            "mlp_ratio": 4.0,
            "attn_mode": "swin",
            "window_size": 8,
            "pe_mode": "ape",
            "use_fp16": False,
            "use_checkpoint": False,
            "qk_rms_norm": False,
            "qk_rms_norm_cross": False,
            "representation_config": None,
            "register_mode": "read",
        }
        return merge_config(cls, base, overrides)

    @classmethod
    def tiny_config(cls, **overrides: Any) -> dict[str, Any]:
        """CPU size: width 64, 2 blocks of 4 heads, 16 registers (134,336 parameters)."""
        base = cls.paper_config(
            model_channels=64, cond_channels=64, num_blocks=2, num_heads=4, num_head_channels=16
        )
        return merge_config(cls, base, overrides)

    # -- utilities -----------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """Xavier-uniform Linear weights and zero biases (TRELLIS); ``reg_tokens`` stay N(0, 1)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def convert_to_fp16(self) -> None:
        """Run the blocks in float16 (linear weights; norms stay float32), as the published model."""
        set_layer_precision(self.blocks, torch.float16)
        self.use_fp16, self.dtype = True, torch.float16

    # -- forward -------------------------------------------------------------------------------
    def check_input(self, x: SparseTensor) -> None:
        """NearError unless ``x`` is a non-empty SLAT ``[N, latent_channels]`` on the grid."""
        if not isinstance(x, SparseTensor):
            raise NearError(
                f"The intrinsic-aware decoder takes a SparseTensor (LH-SLAT), got {type(x).__name__}."
            )
        if x.feats.dim() != 2 or x.feats.shape[1] != self.latent_channels:
            raise NearError(
                f"The SLAT must have feats [N, {self.latent_channels}] (latent channels), "
                f"got {tuple(x.feats.shape)}."
            )
        if not x.feats.is_floating_point():
            raise NearError(f"SLAT features must be floating point, got {x.feats.dtype}.")
        empty = [b for b, n in enumerate(x.seqlens) if n == 0]
        if empty:
            raise NearError(
                f"Empty asset: batch item(s) {empty} of the SLAT have no voxels; there is nothing to decode."
            )
        if x.coords.device.type != "meta":
            c = x.coords[:, 1:]
            lo, hi = int(c.min()), int(c.max())
            if lo < 0 or hi >= self.resolution:
                raise NearError(f"SLAT voxel coords must lie in 0..{self.resolution - 1}; got {lo}..{hi}.")
            if not bool(torch.isfinite(x.feats).all()):
                raise NearError("The SLAT features contain NaN or Inf.")

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, Tensor]:
        """``x`` (LH-SLAT) -> ``(h [N, C] on the voxels of x, registers [B, R, C])``."""
        self.check_input(x)
        h = self.input_layer(x)
        if self.pe_mode == "ape":
            h = h.replace(h.feats + self.pos_embedder(x.coords[:, 1:]).to(h.dtype))
        dtype = torch.float16 if self.use_fp16 else self.input_layer.weight.dtype
        h = h.type(dtype)
        registers = self.reg_tokens.expand(x.batch_size, -1, -1).to(dtype)
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                feats, registers = torch.utils.checkpoint.checkpoint(
                    lambda f, r, blk=block, t=h: _feats_of(blk(t.replace(f), r)),
                    h.feats,
                    registers,
                    use_reentrant=False,
                )
                h = h.replace(feats)
            else:
                h, registers = block(h, registers)
        return h.type(x.dtype), registers.to(x.dtype)


def _feats_of(out: tuple[SparseTensor, Tensor]) -> tuple[Tensor, Tensor]:
    return out[0].feats, out[1]
