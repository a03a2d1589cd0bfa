"""Transformer pieces shared by the SLAT flow and the stage-2 decoders.

Attribute names (``mlp``, ``to_qkv``, ``gamma``, ``adaLN_modulation``, ``norm2`` ...) are the
parameter keys of the published TRELLIS / NeAR checkpoints, so those state dicts load as they are;
everything else here is this project's own code.

* :func:`sinusoidal_time_features` + :class:`TimestepEmbedder` (``mlp.{0,2}``): flow time -> token.
* :class:`AbsolutePositionEmbedder`: parameter-free sin/cos features of integer voxel coords.
* :class:`MultiHeadRMSNorm` (``gamma [heads, dim]``): per-head RMS norm of queries and keys.
* :class:`SparseMultiHeadAttention`: self (``to_qkv``) or cross (``to_q``, ``to_kv``) attention
  with ``to_out``; full or Swin-windowed.
* :class:`SparseFeedForwardNet` (``mlp.{0,2}``): the per-voxel MLP of every block.
* :class:`ModulatedSparseTransformerCrossBlock`: the time-modulated (adaLN-zero) block of the flow.
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

# LayerNorm epsilon of every block (the published value)
NORM_EPS = 1e-6


def swin_shift(block_index: int, window_size: int = 8) -> int:
    """Window offset of the ``block_index``-th Swin block: none on even blocks, half a window on odd."""
    return 0 if block_index % 2 == 0 else window_size // 2


def sinusoidal_time_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of times ``t [B]`` (the flow passes 1000 x its time in [0, 1]).

    Returns ``[B, dim]`` float32: ``dim // 2`` cosines, then as many sines, of ``t * w_k`` with
    ``w_k = max_period ** (-k / (dim // 2))``; one zero column is appended when ``dim`` is odd.
    """
    n = dim // 2
    k = torch.arange(n, dtype=torch.float32, device=t.device)
    # evaluated as exp(-ln(P) * k / n), the order the published weights saw (the phase reaches ~1e3)
    rates = torch.exp(-math.log(max_period) * k / n)
    phase = t.float().unsqueeze(1) * rates.unsqueeze(0)
    features = torch.cat((phase.cos(), phase.sin()), dim=1)
    return F.pad(features, (0, dim - 2 * n))


class TimestepEmbedder(nn.Module):
    """``t [B] -> [B, hidden]``: :func:`sinusoidal_time_features` (256 by default) through
    ``mlp`` = Linear(F, hidden), SiLU, Linear(hidden, hidden)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.n_features = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        first = self.mlp[0]
        return self.mlp(sinusoidal_time_features(t, self.n_features).to(first.weight.dtype))


class AbsolutePositionEmbedder(nn.Module):
    """Integer positions ``[N, axes]`` -> ``[N, channels]`` features; no parameters.

    Each axis gets ``F = channels // axes // 2`` rates ``10000 ** (-k / F)`` and contributes its F
    sines followed by its F cosines; the axes follow one another and zeros fill up to ``channels``.
    """

    def __init__(self, channels: int, in_channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.in_channels = in_channels
        self.freq_dim = channels // in_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise NearError(
                f"AbsolutePositionEmbedder expects [N, {self.in_channels}] positions; got {tuple(x.shape)}."
            )
        exponents = torch.arange(self.freq_dim, dtype=torch.float32, device=x.device) / self.freq_dim
        rates = 1.0 / (10000**exponents)
        phase = x.float().unsqueeze(-1) * rates  # [N, axes, F]
        per_axis = torch.cat((phase.sin(), phase.cos()), dim=-1)  # [N, axes, 2F]
        flat = per_axis.flatten(1)
        return F.pad(flat, (0, self.channels - flat.shape[1]))


class MultiHeadRMSNorm(nn.Module):
    """RMS norm over the last axis of ``[..., heads, dim]``, computed in float32.

    The unit-length vector is scaled by ``gamma [heads, dim]`` and by ``sqrt(dim)`` (so that with
    ``gamma = 1`` the result has unit root-mean-square) and cast back to the input's dtype.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(x.float(), dim=-1)
        return (unit * self.gamma * math.sqrt(self.gamma.shape[-1])).to(x.dtype)


def _single_shift(shift: int | tuple[int, int, int] | list[int] | None) -> int:
    """The Swin window offset as one integer (the three axes must agree)."""
    if shift is None:
        return 0
    if isinstance(shift, (tuple, list)):
        if len(set(shift)) != 1:
            raise NearError(f"Only equal shifts on the three axes are supported; got {shift}.")
        return int(shift[0])
    return int(shift)


class SparseMultiHeadAttention(nn.Module):
    """Multi-head attention on voxel features.

    ``type="self"``: ``to_qkv`` (C -> 3C); ``attn_mode`` "full" (within each batch item) or
    "windowed" / "swin" (``window_size``, ``shift_window``). ``type="cross"``: ``to_q`` (C -> C) and
    ``to_kv`` (ctx -> 2C) over a dense context ``[B, L, ctx_channels]``. Output projection ``to_out``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        type: str = "self",  # noqa: A002 - the name published configs use
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] | None = None,
        qkv_bias: bool = True,
        qk_rms_norm: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        mode = "windowed" if attn_mode == "swin" else attn_mode
        problem = None
        if channels % num_heads:
            problem = f"channels ({channels}) must be divisible by num_heads ({num_heads})."
        elif type not in ("self", "cross"):
            problem = f"Attention type must be 'self' or 'cross', got {type!r}."
        elif mode not in ("full", "windowed"):
            problem = f"attn_mode must be 'full', 'windowed' or 'swin', got {attn_mode!r}."
        elif type == "cross" and mode != "full":
            problem = "Cross-attention only supports attn_mode='full'."
        elif mode == "windowed" and not window_size:
            problem = "Windowed attention needs a window_size."
        if problem:
            raise NearError(problem)
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.ctx_channels = channels if ctx_channels is None else ctx_channels
        self._type = type
        self.attn_mode = mode
        self.window_size = window_size
        self.shift_window = _single_shift(shift_window)
        self.qk_rms_norm = qk_rms_norm
        self.backend = backend
        if type == "self":
            self.to_qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, 2 * channels, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def context_kv(self, context: torch.Tensor) -> torch.Tensor:
        """Keys and values of a dense context, ``[B, L, ctx_channels] -> [B, L, 2, H, D]`` (keys
        RMS-normed if enabled). Compute once and pass as ``forward(x, kv=...)`` to reuse them."""
        if self._type != "cross":
            raise NearError("context_kv is only defined for cross-attention.")
        if context.dim() != 3 or context.shape[-1] != self.ctx_channels:
            raise NearError(
                f"Cross-attention needs a dense context [B, L, {self.ctx_channels}]; got {tuple(context.shape)}."
            )
        batch, length = context.shape[:2]
        kv = self.to_kv(context).view(batch, length, 2, self.num_heads, self.head_dim)
        if not self.qk_rms_norm:
            return kv
        return torch.stack((self.k_rms_norm(kv[:, :, 0]), kv[:, :, 1]), dim=2)

    def _attend_self(self, x: SparseTensor) -> SparseTensor:
        qkv = self.to_qkv(x.feats).view(-1, 3, self.num_heads, self.head_dim)
        if self.qk_rms_norm:
            qkv = torch.stack((self.q_rms_norm(qkv[:, 0]), self.k_rms_norm(qkv[:, 1]), qkv[:, 2]), dim=1)
        packed = x.replace(qkv)
        if self.attn_mode == "windowed":
            return sparse_windowed_self_attention(packed, self.window_size, self.shift_window, self.backend)
        return sparse_self_attention(packed, self.backend)

    def _attend_context(
        self, x: SparseTensor, context: torch.Tensor | None, kv: torch.Tensor | None
    ) -> SparseTensor:
        if kv is None:
            if context is None or context.dim() != 3:
                raise NearError("Cross-attention needs a dense context [B, L, C].")
            kv = self.context_kv(context)
        q = self.to_q(x.feats).view(-1, self.num_heads, self.head_dim)
        if self.qk_rms_norm:
            q = self.q_rms_norm(q)
        return sparse_cross_attention(x.replace(q), kv.to(q.dtype), self.backend)

    def forward(
        self, x: SparseTensor, context: torch.Tensor | None = None, kv: torch.Tensor | None = None
    ) -> SparseTensor:
        """Self-attention on ``x``, or cross-attention to ``context`` (or its precomputed ``kv``)."""
        heads = self._attend_self(x) if self._type == "self" else self._attend_context(x, context, kv)
        return heads.replace(self.to_out(heads.feats.flatten(1)))


class SparseFeedForwardNet(nn.Module):
    """Per-voxel MLP ``mlp`` = Linear(C, ratio C), tanh-approximated GELU, Linear(ratio C, C)."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        width = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            SparseLinear(channels, width), SparseGELU(approximate="tanh"), SparseLinear(width, channels)
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.mlp(x)


def modulate(h: SparseTensor, shift: torch.Tensor, scale: torch.Tensor) -> SparseTensor:
    """Per-batch-item affine modulation ``h (1 + scale) + shift`` (``shift``, ``scale`` ``[B, C]``)."""
    return h * (1 + scale) + shift


class ModulatedSparseTransformerCrossBlock(nn.Module):
    """The flow's DiT block, modulated by the time token (adaLN-zero).

    With ``(s_a, c_a, g_a, s_f, c_f, g_f)`` = ``adaLN_modulation(time)`` (SiLU, Linear(C, 6C)), or
    the model's shared modulation when ``share_mod``::

        x <- x + g_a * self_attn(norm1(x) (1 + c_a) + s_a)
        x <- x + cross_attn(norm2(x), context)
        x <- x + g_f * mlp(norm3(x) (1 + c_f) + s_f)

    ``norm2`` has affine weights, ``norm1`` and ``norm3`` do not; all three run in float32. Both
    attentions are full (within each batch item), as in every published SLAT flow.
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, *, mlp_ratio: float = 4.0,
                 share_mod: bool = False, qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 use_checkpoint: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.share_mod = share_mod
        # registration order fixes the order of random initialisation; keep it
        for name, affine in (("norm1", False), ("norm2", True), ("norm3", False)):
            self.add_module(name, LayerNorm32(channels, elementwise_affine=affine, eps=NORM_EPS))
        self.self_attn = SparseMultiHeadAttention(channels, num_heads, qk_rms_norm=qk_rms_norm)
        self.cross_attn = SparseMultiHeadAttention(
            channels, num_heads, ctx_channels, type="cross", qk_rms_norm=qk_rms_norm_cross
        )
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels))

    def _run(self, x: SparseTensor, mod: torch.Tensor, context: torch.Tensor) -> SparseTensor:
        params = mod if self.share_mod else self.adaLN_modulation(mod)
        attn_shift, attn_scale, attn_gate, ffn_shift, ffn_scale, ffn_gate = params.chunk(6, dim=1)
        x = x + self.self_attn(modulate(self.norm1(x), attn_shift, attn_scale)) * attn_gate
        x = x + self.cross_attn(self.norm2(x), context)
        return x + self.mlp(modulate(self.norm3(x), ffn_shift, ffn_scale)) * ffn_gate

    def forward(self, x: SparseTensor, mod: torch.Tensor, context: torch.Tensor) -> SparseTensor:
        """``x`` voxel features, ``mod`` ``[B, C]`` (``[B, 6C]`` with ``share_mod``), ``context [B, L, ctx]``."""
        if not (self.use_checkpoint and torch.is_grad_enabled()):
            return self._run(x, mod, context)

        def feats_only(feats: torch.Tensor, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return self._run(x.replace(feats), m, c).feats

        return x.replace(
            torch.utils.checkpoint.checkpoint(feats_only, x.feats, mod, context, use_reentrant=False)
        )
