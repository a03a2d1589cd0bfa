"""Submanifold 3x3x3 sparse convolution with two interchangeable backends.

Both backends read the same parameters, laid out as spconv's ``SubMConv3d``:
``weight [out, 3, 3, 3, in]`` and ``bias [out]``. The output voxel set equals the input set and

    out[p] = bias + sum_{i,j,k in 0..2} weight[:, i, j, k, :] @ in[p + (i - 1, j - 1, k - 1)]

(cross-correlation over existing neighbours in the same batch item; missing neighbours count as 0).

Backends:

* ``"spconv"``: spconv 2.x (CPU or CUDA build). Three CPU caveats are handled here: its CPU build
  refuses a fused bias in eval mode ("cpu don't support act and bias"), so the bias is always added
  outside spconv; its CPU backward asks for a CUDA stream, which a CPU-only torch cannot give, so
  :func:`_load_spconv` makes that lookup return 0 when CUDA is unavailable (the CPU kernels never
  use it); and its CPU kernels return wrong sums while torch uses several intra-op threads, so
  they run under a one-thread guard (:func:`_single_torch_thread`).
* ``"torch"``: pure torch: a cached neighbour map (sorted voxel keys + ``searchsorted``), then for
  each of the 27 offsets a gather, a matmul and an ``index_add`` (so only existing pairs cost FLOPs).
* ``"auto"`` (default): spconv when it imports and supports the case, else torch.

The backend is chosen at call time: the module attribute ``SubMConv3d.backend`` (None: global),
:func:`set_conv_backend`, the context manager :func:`conv_backend`, or ``NEAR_CONV_BACKEND``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .. import NearError
from .backend import BackendChoice
from .tensor import SparseTensor

BACKENDS = ("auto", "spconv", "torch")
_choice = BackendChoice("sparse conv backend", BACKENDS, "NEAR_CONV_BACKEND")
_spconv: Any = None  # the spconv.pytorch module once loaded, False if unavailable
_spconv_error: str = ""
_spconv_helpers: dict[tuple[int, int], Any] = {}

# (i, j, k) kernel index order matching weight[:, i, j, k, :]; offset = index - 1
KERNEL_OFFSETS: tuple[tuple[int, int, int], ...] = tuple(itertools.product((-1, 0, 1), repeat=3))
CENTER = 13


set_conv_backend = _choice.set  # process-wide default: "auto", "spconv" or "torch"
get_conv_backend = _choice.get  # this thread's request (context manager first, then global)
conv_backend = _choice.use  # ``with conv_backend(name):`` (this thread only)


def _load_spconv() -> Any:
    """Import spconv.pytorch once; return the module or None (reason in ``_spconv_error``)."""
    global _spconv, _spconv_error
    if _spconv is None:
        try:
            import spconv.pytorch as spc
            import spconv.pytorch.ops as spc_ops

            if not torch.cuda.is_available():
                # spconv's CPU backward calls torch.cuda.current_stream() before dispatching to its
                # CPU kernels, which fails on CPU-only torch; the CPU path ignores the stream value.
                spc_ops.get_current_stream = lambda: 0
            _spconv = spc
        except Exception as e:  # ImportError, or a broken binary build
            _spconv, _spconv_error = False, f"{type(e).__name__}: {e}"
    return _spconv or None


def spconv_available() -> bool:
    """True when spconv imports (its kernels are then used by the "auto" backend)."""
    return _load_spconv() is not None


def _spconv_supports(x: SparseTensor, weight: torch.Tensor) -> bool:
    if x.device.type not in ("cpu", "cuda"):
        return False
    if x.device.type == "cpu" and x.dtype != torch.float32:
        return False  # spconv's CPU kernels are fp32 only
    return x.dtype == weight.dtype and x.feats.dim() == 2


def resolve_backend(x: SparseTensor, weight: torch.Tensor, requested: str | None = None) -> str:
    """The backend that will run for this input ("spconv" or "torch")."""
    name = _choice.check(requested or get_conv_backend())
    if name == "torch":
        return "torch"
    ok = _load_spconv() is not None and _spconv_supports(x, weight)
    if name == "spconv" and not ok:
        why = _spconv_error or f"unsupported input (device {x.device}, dtype {x.dtype})"
        raise NearError(
            f"Sparse conv backend 'spconv' was requested but cannot run here ({why}); "
            "use backend 'torch' or 'auto', or install spconv "
            "(CPU: `pip install spconv`, CUDA 12: spconv-cu12x)."
        )
    return "spconv" if ok else "torch"


# ---------------------------------------------------------------------- torch backend
def subm3_pairs(x: SparseTensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Neighbour pairs per kernel offset: ``(src, dst)`` int64 index tensors, cached per scale.

    ``dst`` are output voxels, ``src`` the input voxel at ``dst + offset`` in the same batch item.
    """
    cached = x.get_spatial_cache("subm3_pairs")
    if cached is not None:
        return cached
    c = x.coords.long()
    n = c.shape[0]
    if n == 0:
        pairs = [(c.new_zeros(0), c.new_zeros(0)) for _ in KERNEL_OFFSETS]
        x.register_spatial_cache("subm3_pairs", pairs)
        return pairs
    xyz = c[:, 1:] + 1  # >= 1 so that offsets of -1 stay >= 0 and never wrap into another row
    side = int(xyz.max().item()) + 2
    if (x.batch_size + 1) * side**3 >= 2**62:
        raise NearError(f"Sparse grid too large for the torch conv backend (side {side}).")
    key = ((c[:, 0] * side + xyz[:, 0]) * side + xyz[:, 1]) * side + xyz[:, 2]
    sorted_key, perm = torch.sort(key)
    pairs = []
    for dx, dy, dz in KERNEL_OFFSETS:
        if (dx, dy, dz) == (0, 0, 0):
            ar = torch.arange(n, device=c.device)
            pairs.append((ar, ar))
            continue
        nk = key + (dx * side + dy) * side + dz
        pos = torch.searchsorted(sorted_key, nk).clamp_(max=n - 1)
        found = sorted_key[pos] == nk
        dst = found.nonzero().flatten()
        pairs.append((perm[pos[dst]], dst))
    x.register_spatial_cache("subm3_pairs", pairs)
    return pairs


def subm3_torch(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Pure-torch submanifold conv; returns output feats ``[N, out]``."""
    pairs = subm3_pairs(x)
    feats = x.feats
    w = weight.reshape(weight.shape[0], 27, weight.shape[-1])  # [out, 27, in]
    out = feats @ w[:, CENTER].t()
    for k, (src, dst) in enumerate(pairs):
        if k == CENTER or dst.numel() == 0:
            continue
        out.index_add_(0, dst, feats.index_select(0, src) @ w[:, k].t())
    if bias is not None:
        out = out + bias
    return out


# ---------------------------------------------------------------------- spconv backend
@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """spconv's CPU kernels give wrong, run-to-run different results while torch runs more than one
    intra-op thread (measured with spconv 2.3.8); run them with one thread and restore afterwards."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _spconv_cpu_pairs(x: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """spconv's native submanifold pair table for ``x`` (cached per scale)."""
    cached = x.get_spatial_cache("spconv_cpu_pairs")
    if cached is None:
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops

        shape = [int(v) + 1 for v in x.coords[:, 1:].max(0).values.tolist()]
        with _single_torch_thread():
            _, pairs, num = ops.get_indice_pairs(
                x.coords.contiguous(), x.batch_size, shape, ConvAlgo.Native,
                [3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0], True, False,
            )  # fmt: skip
        cached = (pairs, num)
        x.register_spatial_cache("spconv_cpu_pairs", cached)
    return cached


class _SpconvSubM3CPU(torch.autograd.Function):
    """spconv's native CPU submanifold conv (forward and backward) under a one-thread guard."""

    @staticmethod
    def forward(ctx, feats, weight, pairs, num):  # noqa: ANN001, ANN205
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops

        ctx.save_for_backward(feats, weight, pairs, num)
        with _single_torch_thread():
            return ops.indice_conv(
                feats, weight, pairs, num, feats.shape[0], False, True, algo=ConvAlgo.Native
            )

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops

        feats, weight, pairs, num = ctx.saved_tensors
        with _single_torch_thread():
            d_in, d_w = ops.indice_conv_backward(
                feats, weight, grad_out.contiguous(), pairs, num, False, True, algo=ConvAlgo.Native
            )
        return d_in, d_w, None, None


def _spconv_helper(in_ch: int, out_ch: int) -> Any:
    """A parameter-free spconv SubMConv3d used only for its ``_conv_forward`` (weights passed in)."""
    key = (in_ch, out_ch)
    if key not in _spconv_helpers:
        spc = _load_spconv()
        with torch.device("meta"):
            _spconv_helpers[key] = spc.SubMConv3d(in_ch, out_ch, 3, bias=False, indice_key="near_subm3")
    return _spconv_helpers[key]


def subm3_spconv(
    x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None, training: bool
) -> torch.Tensor:
    """spconv submanifold conv (bias added outside spconv); returns output feats ``[N, out]``.

    CPU: spconv's native kernels through :class:`_SpconvSubM3CPU`. CUDA: spconv's own module code
    path (its algorithm choice, pair tables shared across layers of the same scale).
    """
    if len(x) == 0:
        feats = x.feats.new_zeros(0, weight.shape[0])
    elif x.device.type == "cpu":
        pairs, num = _spconv_cpu_pairs(x)
        feats = _SpconvSubM3CPU.apply(x.feats.contiguous(), weight.contiguous(), pairs, num)
    else:
        spc = _load_spconv()
        helper = _spconv_helper(weight.shape[-1], weight.shape[0])
        shape = x.get_spatial_cache("spconv_shape")
        if shape is None:
            shape = [int(v) + 1 for v in x.coords[:, 1:].max(0).values.tolist()]
            x.register_spatial_cache("spconv_shape", shape)
        indice_dict = x.get_spatial_cache("spconv_indice_dict")
        st = spc.SparseConvTensor(
            x.feats.contiguous(), x.coords.contiguous(), shape, x.batch_size, indice_dict=indice_dict
        )
        out = helper._conv_forward(training, st, weight, None)
        if indice_dict is None:
            x.register_spatial_cache("spconv_indice_dict", out.indice_dict)
        feats = out.features
    if bias is not None:
        feats = feats + bias
    return feats


# ---------------------------------------------------------------------- modules
class SubMConv3d(nn.Module):
    """Submanifold 3x3x3 conv on a :class:`SparseTensor`; spconv-compatible parameters.

    ``weight [out, 3, 3, 3, in]``, ``bias [out]``. ``backend`` (None = global setting) picks
    "auto" | "spconv" | "torch" at call time.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if kernel_size != 3:
            raise NearError(f"Only 3x3x3 submanifold convs are implemented (got kernel_size={kernel_size}).")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.backend = _choice.check(backend) if backend else None
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = 27 * self.in_channels
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=3, bias={self.bias is not None}"

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise NearError(f"SubMConv3d expects feats [N, {self.in_channels}]; got {tuple(x.feats.shape)}.")
        if resolve_backend(x, self.weight, self.backend) == "spconv":
            feats = subm3_spconv(x, self.weight, self.bias, self.training)
        else:
            feats = subm3_torch(x, self.weight, self.bias)
        return x.replace(feats)


class SparseConv3d(nn.Module):
    """TRELLIS' ``SparseConv3d`` wrapper (stride 1 only): parameters live under ``conv.weight`` /
    ``conv.bias``, so published checkpoints load key-for-key."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.conv = SubMConv3d(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.conv(x)
