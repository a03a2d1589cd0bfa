"""Reusable transformer pieces with TRELLIS' module names (so published state dicts load).

* :class:`TimestepEmbedder` — ``mlp.{0,2}``: 256 sinusoidal frequencies of t (t already x1000).
* :class:`AbsolutePositionEmbedder` — parameter-free sin/cos embedding of integer voxel coords.
* :class:`MultiHeadRMSNorm` — ``gamma [H, D]``: ``normalize(x) * gamma * sqrt(D)`` (fp32).
* :class:`SparseMultiHeadAttention` — self (``to_qkv``) or cross (``to_q``, ``to_kv``) attention
  + ``to_out``; full or Swin-windowed; optional ``q_rms_norm`` / ``k_rms_norm``.
* :class:`SparseFeedForwardNet` — ``mlp.{0,2}``: Linear(C, rC), GELU(tanh), Linear(rC, C).
* :class:`ModulatedSparseTransformerCrossBlock` — adaLN-zero DiT block (self-attn, cross-attn,
  FFN) used by the SLAT flow.
* :class:`SparseTransformerBlock` / :class:`SparseTransformerCrossBlock` — plain pre-norm blocks
  (non-affine LayerNorms by default) for decoders.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import NearError
from ..sparse import (
    LayerNorm32,
    SparseGELU,
    SparseLinear,
    SparseTensor,
    sparse_cross_attention,
    sparse_self_attention,
    sparse_windowed_self_attention,
)


def swin_shift(block_index: int, window_size: int = 8) -> int:
    """TRELLIS' Swin schedule: shift 0 on even blocks, ``window_size // 2`` on odd blocks."""
    return window_size // 2 * (block_index % 2)


class TimestepEmbedder(nn.Module):
    """Embed scalar times ``t [B]`` (the sampler passes 1000 * t) into ``[B, hidden]``.

    Frequencies ``exp(-ln(10000) k / (F/2))`` for k < F/2, features ``[cos(t f), sin(t f)]``, then
    Linear(F, hidden), SiLU, Linear(hidden, hidden).
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """``[B] -> [B, dim]`` sinusoidal features (cos first, then sin; zero-padded if dim is odd)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class AbsolutePositionEmbedder(nn.Module):
    """Sin/cos embedding of ``[N, in_channels]`` positions into ``[N, channels]`` (no parameters).

    Per axis ``F = channels // in_channels // 2`` frequencies ``1 / 10000^(k / F)``; per axis
    ``[sin(p f), cos(p f)]``; axes concatenated; zero-padded to ``channels``.
    """

    def __init__(self, channels: int, in_channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.in_channels = in_channels
        self.freq_dim = channels // in_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, D = x.shape
        if D != self.in_channels:
            raise NearError(
                f"AbsolutePositionEmbedder expects [N, {self.in_channels}] positions; got {tuple(x.shape)}."
            )
        freqs = torch.arange(self.freq_dim, dtype=torch.float32, device=x.device) / self.freq_dim
        freqs = 1.0 / (10000**freqs)
        out = torch.outer(x.reshape(-1).float(), freqs)
        emb = torch.cat([torch.sin(out), torch.cos(out)], dim=-1).reshape(N, -1)
        if emb.shape[1] < self.channels:
            emb = torch.cat([emb, emb.new_zeros(N, self.channels - emb.shape[1])], dim=-1)
        return emb


class MultiHeadRMSNorm(nn.Module):
    """Per-head RMS norm: ``normalize(x, dim=-1) * gamma * sqrt(dim)``; ``gamma [heads, dim]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., heads, dim]`` (float32 inside, cast back)."""
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)


class SparseMultiHeadAttention(nn.Module):
    """Multi-head attention on voxel features (TRELLIS names).

    ``type="self"``: ``to_qkv`` (C -> 3C); ``attn_mode`` "full" (per batch item) or "windowed" /
    "swin" (``window_size``, ``shift_window``). ``type="cross"``: ``to_q`` (C -> C), ``to_kv``
    (ctx -> 2C), context a dense ``[B, L, ctx_channels]`` tensor. Output projection ``to_out``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        type: str = "self",  # noqa: A002 - TRELLIS argument name
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        qkv_bias: bool = True,
        qk_rms_norm: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise NearError(f"channels ({channels}) must be divisible by num_heads ({num_heads}).")
        if type not in ("self", "cross"):
            raise NearError(f"Attention type must be 'self' or 'cross', got {type!r}.")
        if attn_mode == "swin":
            attn_mode = "windowed"
        if attn_mode not in ("full", "windowed"):
            raise NearError(f"attn_mode must be 'full', 'windowed' or 'swin', got {attn_mode!r}.")
        if type == "cross" and attn_mode != "full":
            raise NearError("Cross-attention only supports attn_mode='full'.")
        if attn_mode == "windowed" and not window_size:
            raise NearError("Windowed attention needs a window_size.")
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self._type = type
        self.attn_mode = attn_mode
        self.window_size = window_size
        shift = shift_window if shift_window is not None else 0
        if isinstance(shift, (tuple, list)):
            if len(set(shift)) != 1:
                raise NearError(f"Only equal shifts on the three axes are supported; got {shift}.")
            shift = shift[0]
        self.shift_window = int(shift)
        self.qk_rms_norm = qk_rms_norm
        self.backend = backend
        if type == "self":
            self.to_qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, channels * 2, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: SparseTensor, context: torch.Tensor | None = None) -> SparseTensor:
        H, D = self.num_heads, self.head_dim
        if self._type == "self":
            qkv = self.to_qkv(x.feats).reshape(-1, 3, H, D)
            if self.qk_rms_norm:
                q, k, v = qkv.unbind(1)
                qkv = torch.stack([self.q_rms_norm(q), self.k_rms_norm(k), v], dim=1)
            qkv_s = x.replace(qkv)
            if self.attn_mode == "full":
                h = sparse_self_attention(qkv_s, self.backend)
            else:
                h = sparse_windowed_self_attention(qkv_s, self.window_size, self.shift_window, self.backend)
        else:
            if context is None or context.dim() != 3:
                raise NearError("Cross-attention needs a dense context [B, L, C].")
            q = self.to_q(x.feats).reshape(-1, H, D)
            kv = self.to_kv(context).reshape(context.shape[0], context.shape[1], 2, H, D)
            if self.qk_rms_norm:
                q = self.q_rms_norm(q)
                k, v = kv.unbind(2)
                kv = torch.stack([self.k_rms_norm(k), v], dim=2)
            h = sparse_cross_attention(x.replace(q), kv, self.backend)
        return h.replace(self.to_out(h.feats.reshape(h.feats.shape[0], -1)))


class SparseFeedForwardNet(nn.Module):
    """``mlp = [SparseLinear(C, rC), GELU(tanh), SparseLinear(rC, C)]``."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            SparseLinear(channels, hidden), SparseGELU(approximate="tanh"), SparseLinear(hidden, channels)
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.mlp(x)


class ModulatedSparseTransformerCrossBlock(nn.Module):
    """adaLN-zero block: x += g1 * SA(LN1(x)(1+s1)+b1); x += CA(LN2(x), ctx); x += g2 * FFN(LN3(x)(1+s2)+b2).

    ``adaLN_modulation = [SiLU, Linear(C, 6C)]`` gives (shift, scale, gate) for attention and FFN;
    ``norm1``/``norm3`` non-affine, ``norm2`` affine; norms in float32 (eps 1e-6).
    """

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        use_checkpoint: bool = False,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
        share_mod: bool = False,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = SparseMultiHeadAttention(
            channels, num_heads, type="self", attn_mode=attn_mode, window_size=window_size,
            shift_window=shift_window, qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm,
        )  # fmt: skip
        self.cross_attn = SparseMultiHeadAttention(
            channels, num_heads, ctx_channels=ctx_channels, type="cross", qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm_cross,
        )  # fmt: skip
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels, bias=True))

    def _forward(self, x: SparseTensor, mod: torch.Tensor, context: torch.Tensor) -> SparseTensor:
        if not self.share_mod:
            mod = self.adaLN_modulation(mod)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        h = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = x + self.self_attn(h) * gate_msa
        x = x + self.cross_attn(self.norm2(x), context)
        h = self.norm3(x) * (1 + scale_mlp) + shift_mlp
        return x + self.mlp(h) * gate_mlp

    def forward(self, x: SparseTensor, mod: torch.Tensor, context: torch.Tensor) -> SparseTensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            feats = torch.utils.checkpoint.checkpoint(
                lambda f, m, c: self._forward(x.replace(f), m, c).feats,
                x.feats,
                mod,
                context,
                use_reentrant=False,
            )
            return x.replace(feats)
        return self._forward(x, mod, context)


class SparseTransformerBlock(nn.Module):
    """Pre-norm block: x += SA(LN1(x)); x += FFN(LN2(x)) (``attn``, ``mlp``, ``norm1``, ``norm2``)."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        qk_rms_norm: bool = False,
        qkv_bias: bool = True,
        ln_affine: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.attn = SparseMultiHeadAttention(
            channels, num_heads, attn_mode=attn_mode, window_size=window_size, shift_window=shift_window,
            qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm,
        )  # fmt: skip
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SparseTransformerCrossBlock(nn.Module):
    """Pre-norm block: x += SA(LN1(x)); x += CA(LN2(x), ctx); x += FFN(LN3(x))."""

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
        ln_affine: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=1e-6)
        self.self_attn = SparseMultiHeadAttention(
            channels, num_heads, type="self", attn_mode=attn_mode, window_size=window_size,
            shift_window=shift_window, qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm,
        )  # fmt: skip
        self.cross_attn = SparseMultiHeadAttention(
            channels, num_heads, ctx_channels=ctx_channels, type="cross", qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm_cross,
        )  # fmt: skip
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)

    def forward(self, x: SparseTensor, context: torch.Tensor) -> SparseTensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), context)
        return x + self.mlp(self.norm3(x))
