"""Per-voxel layers (linear, norm, activations) and mean-pool down / cached up-sampling.

Every layer accepts a :class:`SparseTensor` (acting on ``feats``) and, where it makes sense, a
dense tensor too, so the same module serves voxel features and context tokens. Parameter names
are those of the underlying torch modules (``weight``, ``bias``), as in TRELLIS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import NearError
from .tensor import SparseTensor

Tensorish = torch.Tensor | SparseTensor


def _apply(x: Tensorish, fn) -> Tensorish:  # noqa: ANN001 - small internal helper
    return x.replace(fn(x.feats)) if isinstance(x, SparseTensor) else fn(x)


class SparseLinear(nn.Linear):
    """``nn.Linear`` on the last dim of ``feats`` (keys ``weight [out, in]``, ``bias [out]``)."""

    def forward(self, x: Tensorish) -> Tensorish:  # type: ignore[override]
        return _apply(x, super().forward)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (TRELLIS ``LayerNorm32``); sparse or dense input."""

    def forward(self, x: Tensorish) -> Tensorish:  # type: ignore[override]
        def f(t: torch.Tensor) -> torch.Tensor:
            return super(LayerNorm32, self).forward(t.float()).type(t.dtype)

        return _apply(x, f)


SparseLayerNorm = LayerNorm32


class SparseGELU(nn.GELU):
    """GELU on ``feats`` (``approximate="tanh"`` in TRELLIS' FFNs)."""

    def forward(self, x: Tensorish) -> Tensorish:  # type: ignore[override]
        return _apply(x, super().forward)


class SparseSiLU(nn.SiLU):
    """SiLU on ``feats``."""

    def forward(self, x: Tensorish) -> Tensorish:  # type: ignore[override]
        return _apply(x, super().forward)


def _up_key(factor: int) -> str:
    return f"upsample_{factor}"


# How a coarse voxel's pooled feature is normalized: "count" divides the sum of its n children by
# n (the true mean); "count_plus_one" by n + 1, the published TRELLIS/NeAR behaviour (their pooling
# averages into a zero-initialized slot that counts as one more element), which their flow
# weights were trained with.
POOL_DIVISORS = ("count", "count_plus_one")


def sparse_downsample(x: SparseTensor, factor: int = 2, divisor: str = "count") -> SparseTensor:
    """Pool voxels sharing ``coord // factor`` (per batch item): sum of the children / ``divisor``
    (``"count"``: n, the mean; ``"count_plus_one"``: n + 1, see :data:`POOL_DIVISORS`).

    Returns a tensor at scale ``x.scale * factor`` whose voxels are sorted by (batch, x, y, z); the
    inverse index, the fine coords and layout are cached on it for :func:`sparse_upsample`.
    """
    c = x.coords.long()
    coarse = c.clone()
    coarse[:, 1:] = torch.div(coarse[:, 1:], factor, rounding_mode="floor")
    side = int(coarse[:, 1:].max().item()) + 1 if len(x) else 1
    code = ((coarse[:, 0] * side + coarse[:, 1]) * side + coarse[:, 2]) * side + coarse[:, 3]
    ucode, inv = torch.unique(code, return_inverse=True)  # sorted -> batch-contiguous
    feats = x.feats
    flat = feats.reshape(feats.shape[0], -1)
    summed = flat.new_zeros(ucode.shape[0], flat.shape[1]).index_add_(0, inv, flat)
    if divisor not in POOL_DIVISORS:
        raise NearError(f"Unknown pooling divisor {divisor!r}; use one of {POOL_DIVISORS}.")
    counts = torch.bincount(inv, minlength=ucode.shape[0]).to(flat.dtype)
    counts = counts + 1 if divisor == "count_plus_one" else counts.clamp_(min=1)
    new_feats = (summed / counts[:, None]).reshape(ucode.shape[0], *feats.shape[1:])
    z = ucode % side
    y = (ucode // side) % side
    xx = (ucode // side**2) % side
    b = ucode // side**3
    new_coords = torch.stack([b, xx, y, z], dim=1).to(torch.int32)
    out = SparseTensor(
        new_feats,
        new_coords,
        batch_size=x.batch_size,
        scale=tuple(s * factor for s in x.scale),  # type: ignore[arg-type]
        spatial_cache=x._spatial_cache,
    )
    out.register_spatial_cache(_up_key(factor), (x.coords, x.layout, inv))
    return out


def sparse_upsample(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Nearest up-sampling back onto the fine voxels recorded by the matching down-sample."""
    cached = x.get_spatial_cache(_up_key(factor))
    if cached is None:
        raise NearError(
            "sparse_upsample found no cached fine voxels at this scale: an upsample must follow the "
            "matching sparse_downsample of the same tensor lineage."
        )
    coords, layout, inv = cached
    return SparseTensor(
        x.feats[inv],
        coords,
        torch.Size([x.batch_size, *x.feats.shape[1:]]),
        layout,
        scale=tuple(s // factor for s in x.scale),  # type: ignore[arg-type]
        spatial_cache=x._spatial_cache,
    )


class SparseDownsample(nn.Module):
    """Module form of :func:`sparse_downsample` (pooling by ``factor`` with ``divisor``)."""

    def __init__(self, factor: int = 2, divisor: str = "count") -> None:
        super().__init__()
        if divisor not in POOL_DIVISORS:
            raise NearError(f"Unknown pooling divisor {divisor!r}; use one of {POOL_DIVISORS}.")
        self.factor, self.divisor = factor, divisor

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_downsample(x, self.factor, self.divisor)


class SparseUpsample(nn.Module):
    """Module form of :func:`sparse_upsample`."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_upsample(x, self.factor)


def layer_norm_feats(x: SparseTensor, eps: float = 1e-5) -> SparseTensor:
    """Non-affine LayerNorm over the last feature dim (in float32)."""
    f = x.feats
    return x.replace(F.layer_norm(f.float(), f.shape[-1:], eps=eps).type(f.dtype))
