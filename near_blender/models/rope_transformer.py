"""Pre-norm transformer encoder with RMSNorm and rotary position embedding (RoPE).

Used by the lighting tokenizer on its ``[B, N, C]`` token sequence. Conventions (those of the
published checkpoint, whose key names this module tree reproduces):

* RoPE is **1D over the token index** (the 64x64 token grid flattened row-major, so index
  ``i = row * W + col``), ``rotate_half`` form: channel pairs ``(j, j + d/2)`` of each head rotate by
  ``i * base^(-2j/d)``; applied to q and k only.
* layer: ``x + Drop(Attn(RMSNorm1(x)))`` then ``x + Drop(W2 Drop(GELU(W1 RMSNorm2(x))))``; q/k/v
  projections without bias, output projection with bias; exact (erf) GELU; RMSNorm eps 1e-6 with
  a learned ``weight``. Dropout sits where the published layer has it (attention probabilities,
  after the output projection, after the residual branch, inside the FFN); it acts only in
  training.
* ``tie_weights=True`` repeats **one** layer object ``num_layers`` times: the state dict stores it
  ``num_layers`` times (``layers.0.*``, ``layers.1.*``) while ``parameters()`` counts it once.

Keys: ``layers.<i>.self_attn.{q_proj, k_proj, v_proj, out_proj}``, ``layers.<i>.{linear1, linear2}``,
``layers.<i>.{norm1, norm2}.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import NearError


def rope_cos_sin(
    seq_len: int, head_dim: int, base: float, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """``cos, sin`` tables ``[seq_len, head_dim]`` for 1D rotate-half RoPE."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[..., T, d]`` with tables ``[T, d]`` (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RoPESelfAttention(nn.Module):
    """Multi-head self-attention with RoPE on ``[B, T, C]``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, rope_base: float = 10000.0) -> None:
        super().__init__()
        if d_model % n_heads != 0 or (d_model // n_heads) % 2 != 0:
            raise NearError(f"Width {d_model} must split into {n_heads} heads of even size for RoPE.")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.dropout, self.rope_base = float(dropout), float(rope_base)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        cos, sin = rope_cos_sin(T, self.head_dim, self.rope_base, x.device, x.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = out.transpose(1, 2).reshape(B, T, C)
        return F.dropout(self.out_proj(out), self.dropout, self.training)


class RoPEEncoderLayer(nn.Module):
    """Pre-norm (RMSNorm) RoPE self-attention + GELU FFN, ``[B, T, C] -> [B, T, C]``."""

    def __init__(
        self, d_model: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, rope_base: float = 1e4
    ) -> None:  # fmt: skip
        super().__init__()
        self.self_attn = RoPESelfAttention(d_model, n_heads, dropout, rope_base)
        hidden = int(d_model * mlp_ratio)
        self.linear1 = nn.Linear(d_model, hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        self.norm1 = nn.RMSNorm(d_model, eps=1e-6)
        self.norm2 = nn.RMSNorm(d_model, eps=1e-6)
        self.dropout = float(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + F.dropout(self.self_attn(self.norm1(x)), self.dropout, self.training)
        h = F.dropout(F.gelu(self.linear1(self.norm2(x))), self.dropout, self.training)
        return x + F.dropout(self.linear2(h), self.dropout, self.training)


class RoPETransformer(nn.Module):
    """``num_layers`` :class:`RoPEEncoderLayer` s, optionally one weight-tied layer repeated."""

    def __init__(
        self, d_model: int, n_heads: int, num_layers: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0,
        rope_base: float = 10000.0, tie_weights: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if num_layers < 0:
            raise NearError(f"num_layers must be >= 0, got {num_layers}.")
        if tie_weights and num_layers > 0:
            layer = RoPEEncoderLayer(d_model, n_heads, mlp_ratio, dropout, rope_base)
            self.layers = nn.ModuleList([layer] * num_layers)
        else:
            self.layers = nn.ModuleList(
                RoPEEncoderLayer(d_model, n_heads, mlp_ratio, dropout, rope_base) for _ in range(num_layers)
            )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
