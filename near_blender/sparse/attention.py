"""Attention over variable-length voxel sets that never crosses batch items (or windows).

Shapes: heads ``H``, head dim ``D``; packed sequences are contiguous row blocks.

* :func:`sparse_self_attention` — full self-attention within each batch item,
  ``qkv.feats [N, 3, H, D] -> [N, H, D]``;
* :func:`sparse_windowed_self_attention` — Swin-style: voxels attend only to voxels of the same
  batch item whose window id ``floor((coord + shift) / window)`` (per axis) is equal;
* :func:`sparse_cross_attention` — voxels of item ``b`` attend to the dense context tokens of item
  ``b``: ``q.feats [N, H, D]``, ``kv [B, L, 2, H, D] -> [N, H, D]``;
* :func:`varlen_attention` — the packed primitive underneath (softmax scale ``1 / sqrt(D)``).

Backends ("sdpa" | "flash" | "xformers" | "auto"), chosen per call: ``torch``'s
``scaled_dot_product_attention`` (always available; sequences are bucketed by length and padded
with a key mask, chunked to bound memory), flash-attn's varlen kernel or xformers'
block-diagonal mask (CUDA only, used by "auto" when importable). Select with
:func:`set_attention_backend`, the :func:`attention_backend` context manager or
``NEAR_ATTN_BACKEND``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .. import NearError
from .backend import BackendChoice
from .tensor import SparseTensor

BACKENDS = ("auto", "sdpa", "flash", "xformers")
_choice = BackendChoice("attention backend", BACKENDS, "NEAR_ATTN_BACKEND")
_modules: dict[str, Any] = {}

# Largest attention-score block (elements) materialized at once by the sdpa path.
SDPA_BLOCK_ELEMENTS = 1 << 25


set_attention_backend = _choice.set  # process-wide default
get_attention_backend = _choice.get  # this thread's request (context manager first, then global)
attention_backend = _choice.use  # ``with attention_backend(name):`` (this thread only)


def _import(name: str) -> Any:
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(name)
        except Exception:  # missing, or a binary built for another torch / CUDA
            _modules[name] = None
    return _modules[name]


def resolve_attention_backend(device: torch.device, dtype: torch.dtype, requested: str | None = None) -> str:
    """The backend that will run for tensors on ``device`` with ``dtype``."""
    name = _choice.check(requested or get_attention_backend())
    if name == "sdpa":
        return name
    if name == "auto":
        if device.type != "cuda":
            return "sdpa"
        if dtype in (torch.float16, torch.bfloat16) and _import("flash_attn") is not None:
            return "flash"
        if _import("xformers.ops") is not None:
            return "xformers"
        return "sdpa"
    module = "flash_attn" if name == "flash" else "xformers.ops"
    if device.type != "cuda":
        raise NearError(
            f"Attention backend {name!r} needs CUDA tensors (got {device}); use 'sdpa' or 'auto'."
        )
    if _import(module) is None:
        raise NearError(
            f"Attention backend {name!r} requested but `{module}` does not import; use 'sdpa' or 'auto'."
        )
    return name


# ---------------------------------------------------------------------- packed primitive
def _starts(lens: Sequence[int]) -> list[int]:
    out, s = [], 0
    for n in lens:
        out.append(s)
        s += n
    return out


def _sdpa_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_lens: Sequence[int], kv_lens: Sequence[int]
) -> torch.Tensor:
    H = q.shape[1]
    dev = q.device
    if len(q_lens) == 1:  # one sequence: no padding, only query chunking
        return _sdpa_single(q, k, v)
    q_st, kv_st = _starts(q_lens), _starts(kv_lens)
    order = sorted((i for i in range(len(q_lens)) if q_lens[i] > 0), key=lambda i: (-kv_lens[i], -q_lens[i]))
    pieces, rows = [], []
    gi = 0
    while gi < len(order):
        lq, lk = q_lens[order[gi]], kv_lens[order[gi]]  # maxima of this group (sorted descending)
        lq_max = lq
        gj = gi + 1
        while gj < len(order):
            lq_max2 = max(lq_max, q_lens[order[gj]])
            if (gj - gi + 1) * H * lq_max2 * lk > SDPA_BLOCK_ELEMENTS:
                break
            lq_max = lq_max2
            gj += 1
        group = order[gi:gj]
        gi = gj
        if len(group) == 1:
            i = group[0]
            qs, ks = q_st[i], kv_st[i]
            pieces.append(
                _sdpa_single(q[qs : qs + q_lens[i]], k[ks : ks + kv_lens[i]], v[ks : ks + kv_lens[i]])
            )
            rows.append(torch.arange(qs, qs + q_lens[i], device=dev))
            continue
        qs = torch.tensor([q_st[i] for i in group], device=dev)
        ks = torch.tensor([kv_st[i] for i in group], device=dev)
        ql = torch.tensor([q_lens[i] for i in group], device=dev)
        kl = torch.tensor([kv_lens[i] for i in group], device=dev)
        ar_q = torch.arange(lq_max, device=dev)
        ar_k = torch.arange(lk, device=dev)
        valid_q = ar_q[None] < ql[:, None]  # [G, Lq]
        valid_k = ar_k[None] < kl[:, None]  # [G, Lk]
        iq = torch.where(valid_q, qs[:, None] + ar_q[None], 0)
        ik = torch.where(valid_k, ks[:, None] + ar_k[None], 0)
        qg = q[iq].transpose(1, 2)  # [G, H, Lq, D]
        kg = k[ik].transpose(1, 2)
        vg = v[ik].transpose(1, 2)
        mask = None if bool(valid_k.all()) else valid_k[:, None, None, :]
        o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask).transpose(1, 2)  # [G, Lq, H, Dv]
        pieces.append(o[valid_q])
        rows.append(iq[valid_q])
    out = q.new_zeros(q.shape[0], H, v.shape[-1])
    if pieces:
        out = out.index_copy(0, torch.cat(rows), torch.cat(pieces).to(out.dtype))
    return out


def _sdpa_single(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One sequence ``q [Lq, H, D]``, ``k/v [Lk, H, D]``; queries chunked to bound memory."""
    H, lk = q.shape[1], k.shape[0]
    if q.shape[0] == 0:
        return q.new_zeros(0, H, v.shape[-1])
    kt, vt = k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    chunk = max(1, SDPA_BLOCK_ELEMENTS // max(1, H * lk))
    outs = []
    for s in range(0, q.shape[0], chunk):
        qt = q[s : s + chunk].transpose(0, 1)[None]
        outs.append(F.scaled_dot_product_attention(qt, kt, vt)[0].transpose(0, 1))
    return torch.cat(outs, 0) if len(outs) > 1 else outs[0]


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    backend: str | None = None,
) -> torch.Tensor:
    """Attention between packed sequences: ``q [sum q_lens, H, D]``, ``k/v [sum kv_lens, H, D]``.

    Sequence ``i`` of the queries attends only to sequence ``i`` of the keys. Returns
    ``[sum q_lens, H, Dv]``.
    """
    if len(q_lens) != len(kv_lens):
        raise NearError(f"varlen_attention: {len(q_lens)} query sequences but {len(kv_lens)} key sequences.")
    if sum(q_lens) != q.shape[0] or sum(kv_lens) != k.shape[0]:
        raise NearError("varlen_attention: sequence lengths do not add up to the packed tensor sizes.")
    if any(ql > 0 and kl == 0 for ql, kl in zip(q_lens, kv_lens)):
        raise NearError("varlen_attention: a query sequence has no keys to attend to.")
    name = resolve_attention_backend(q.device, q.dtype, backend)
    if name == "sdpa":
        return _sdpa_varlen(q, k, v, q_lens, kv_lens)
    cu_q = torch.tensor(
        [0, *torch.tensor(list(q_lens)).cumsum(0).tolist()], device=q.device, dtype=torch.int32
    )
    cu_k = torch.tensor(
        [0, *torch.tensor(list(kv_lens)).cumsum(0).tolist()], device=q.device, dtype=torch.int32
    )
    if name == "flash":
        fa = _import("flash_attn")
        dt = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = fa.flash_attn_varlen_func(q.to(dt), k.to(dt), v.to(dt), cu_q, cu_k, max(q_lens), max(kv_lens))
        return out.to(q.dtype)
    xops = _import("xformers.ops")
    mask = xops.fmha.BlockDiagonalMask.from_seqlens(list(q_lens), list(kv_lens))
    return xops.memory_efficient_attention(q[None], k[None], v[None], mask)[0]


# ---------------------------------------------------------------------- sparse wrappers
def sparse_self_attention(qkv: SparseTensor, backend: str | None = None) -> SparseTensor:
    """Full self-attention per batch item: ``qkv.feats [N, 3, H, D] -> feats [N, H, D]``."""
    if qkv.feats.dim() != 4 or qkv.feats.shape[1] != 3:
        raise NearError(
            f"sparse_self_attention expects qkv feats [N, 3, H, D]; got {tuple(qkv.feats.shape)}."
        )
    q, k, v = qkv.feats.unbind(1)
    lens = qkv.seqlens
    return qkv.replace(varlen_attention(q, k, v, lens, lens, backend))


def window_partition(
    x: SparseTensor, window_size: int, shift: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Group voxels by (batch, window); cached per scale.

    Returns ``fwd`` (a permutation putting each window's voxels together), ``bwd`` (its inverse)
    and the window lengths in ``fwd`` order.
    """
    key = f"window_{window_size}_{shift}"
    cached = x.get_spatial_cache(key)
    if cached is not None:
        return cached
    c = x.coords.long()
    w = torch.div(c[:, 1:] + shift, window_size, rounding_mode="floor")
    nw = (w.max(0).values + 1).tolist() if len(x) else [1, 1, 1]
    wid = ((c[:, 0] * nw[0] + w[:, 0]) * nw[1] + w[:, 1]) * nw[2] + w[:, 2]
    fwd = torch.argsort(wid, stable=True)
    bwd = torch.empty_like(fwd)
    bwd[fwd] = torch.arange(fwd.shape[0], device=fwd.device)
    _, counts = torch.unique_consecutive(wid[fwd], return_counts=True)
    out = (fwd, bwd, counts.tolist())
    x.register_spatial_cache(key, out)
    return out


def sparse_windowed_self_attention(
    qkv: SparseTensor, window_size: int, shift: int = 0, backend: str | None = None
) -> SparseTensor:
    """Swin self-attention: within (batch item, window of ``window_size``³ shifted by ``shift``)."""
    if qkv.feats.dim() != 4 or qkv.feats.shape[1] != 3:
        raise NearError(
            f"sparse_windowed_self_attention expects qkv feats [N, 3, H, D]; got {tuple(qkv.feats.shape)}."
        )
    fwd, bwd, lens = window_partition(qkv, window_size, shift)
    q, k, v = qkv.feats[fwd].unbind(1)
    out = varlen_attention(q, k, v, lens, lens, backend)
    return qkv.replace(out[bwd])


def sparse_cross_attention(q: SparseTensor, kv: torch.Tensor, backend: str | None = None) -> SparseTensor:
    """Voxels of item b attend to context tokens of item b: ``q.feats [N, H, D]``, ``kv [B, L, 2, H, D]``."""
    if q.feats.dim() != 3:
        raise NearError(f"sparse_cross_attention expects q feats [N, H, D]; got {tuple(q.feats.shape)}.")
    if kv.dim() != 5 or kv.shape[2] != 2:
        raise NearError(f"sparse_cross_attention expects kv [B, L, 2, H, D]; got {tuple(kv.shape)}.")
    B, L = kv.shape[:2]
    if B == 1 and q.batch_size > 1:
        kv = kv.expand(q.batch_size, *kv.shape[1:])
        B = q.batch_size
    if B != q.batch_size:
        raise NearError(f"sparse_cross_attention: {q.batch_size} voxel batch items but context batch {B}.")
    k = kv[:, :, 0].reshape(B * L, *kv.shape[3:])
    v = kv[:, :, 1].reshape(B * L, *kv.shape[3:])
    out = varlen_attention(q.feats, k, v, q.seqlens, [L] * B, backend)
    return q.replace(out)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain attention on dense token sequences: ``[B, L, H, D]`` in and out."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2)
