"""One block of the Lighting-Aware Decoder (:mod:`.lighting_decoder`): register cross-attention,
lighting cross-attention, FFN over the voxel features ``[N, C]``; no voxel self-attention.

Built from the shared TRELLIS modules of :mod:`.blocks`; module names and layout match the
published renderer's blocks (``norm1..3``, ``register_attn``, ``cross_attn``, ``mlp``).
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import NearError
from ..sparse import LayerNorm32, SparseTensor
from .blocks import NORM_EPS, SparseFeedForwardNet, SparseMultiHeadAttention


class LightingAwareBlock(nn.Module):
    """Register cross-attention, lighting cross-attention, FFN; pre-LN residuals, no self-attention.

    Published order: ``x += register_attn(norm2(x), registers)``, ``x += cross_attn(norm1(x),
    light_tokens)``, ``x += mlp(norm3(x))`` (non-affine LayerNorms, eps 1e-6, float32). The
    attention and FFN modules are the shared TRELLIS ones (:mod:`.blocks`); every cross-attention
    stays within its batch item.
    """

    def __init__(self, channels: int, num_heads: int, *, token_channels: int, mlp_ratio: float = 4.0,
                 qk_rms_norm_cross: bool = False) -> None:  # fmt: skip
        super().__init__()
        if channels % num_heads != 0:
            raise NearError(f"Width {channels} does not split into {num_heads} attention heads.")
        for name in ("norm1", "norm2", "norm3"):
            self.add_module(name, LayerNorm32(channels, elementwise_affine=False, eps=NORM_EPS))
        for name in ("register_attn", "cross_attn"):
            attention = SparseMultiHeadAttention(
                channels, num_heads, token_channels, type="cross", qk_rms_norm=qk_rms_norm_cross
            )
            self.add_module(name, attention)
        self.mlp = SparseFeedForwardNet(channels, mlp_ratio)

    def forward(self, x: SparseTensor, register_kv: Tensor, light_kv: Tensor) -> SparseTensor:
        """``x`` ``[N, C]``; keys/values ``[B or 1, L, 2, H, D]`` from ``register_attn.context_kv`` and
        ``cross_attn.context_kv`` (precomputed once per asset / per lighting)."""
        x = x + self.register_attn(self.norm2(x), kv=register_kv)
        x = x + self.cross_attn(self.norm1(x), kv=light_kv)
        return x + self.mlp(self.norm3(x))
