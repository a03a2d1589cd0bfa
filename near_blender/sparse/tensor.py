"""``SparseTensor``: features on the active voxels of a batch of sparse grids.

Conventions (same as TRELLIS):

* ``coords``: int32 ``[N, 4]`` = (batch, x, y, z), voxels of one batch item stored contiguously
  and batch items in increasing order (``layout[b]`` is the slice of item ``b``);
* ``feats``: ``[N, *C]`` (usually ``[N, C]``; attention uses ``[N, 3, H, D]`` etc.);
* ``shape`` = ``(B, *C)``;
* ``scale``: the down-sampling factor per axis relative to the input grid; spatial caches (neighbour
  maps, window partitions, up-sampling indices) are stored per scale in a dict shared by every
  tensor derived from the same coordinates, so they are computed once per forward pass.

Element-wise arithmetic with a dense tensor broadcasts *per batch item*: a tensor broadcastable
to ``[B, *C]`` (e.g. a ``[B, C]`` modulation) is expanded onto each item's voxels. For per-voxel
operands use ``x.replace(x.feats + t)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import NearError

Scale = tuple[int, int, int]


class SparseTensor:
    """Sparse voxel features ``feats [N, *C]`` at ``coords int32 [N, 4]`` (batch, x, y, z)."""

    __slots__ = ("feats", "coords", "_shape", "_layout", "_scale", "_spatial_cache", "_batch_idx")

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        shape: torch.Size | Sequence[int] | None = None,
        layout: list[slice] | None = None,
        scale: Scale = (1, 1, 1),
        spatial_cache: dict[str, dict[str, Any]] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise NearError(
                f"SparseTensor coords must be [N, 4] (batch, x, y, z); got {tuple(coords.shape)}."
            )
        if feats.shape[0] != coords.shape[0]:
            raise NearError(
                f"SparseTensor feats and coords disagree on the number of voxels: "
                f"{feats.shape[0]} vs {coords.shape[0]}."
            )
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        self.feats = feats
        self.coords = coords
        if shape is None:
            if batch_size is None:
                batch_size = int(coords[:, 0].max().item()) + 1 if coords.shape[0] > 0 else 1
            shape = torch.Size([batch_size, *feats.shape[1:]])
        self._shape = torch.Size(shape)
        if layout is None:
            layout = self._compute_layout(coords, self._shape[0])
        self._layout = layout
        self._scale = tuple(scale)
        self._spatial_cache = spatial_cache if spatial_cache is not None else {}
        self._batch_idx: torch.Tensor | None = None

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _compute_layout(coords: torch.Tensor, batch_size: int) -> list[slice]:
        if coords.device.type == "meta":
            raise NearError(
                "SparseTensor needs real coordinates (not on the meta device) to compute its layout."
            )
        b = coords[:, 0].long()
        if b.numel() and (b.min() < 0 or b.max() >= batch_size):
            raise NearError(
                f"SparseTensor batch indices must lie in [0, {batch_size}); got {b.min()}..{b.max()}."
            )
        if b.numel() > 1 and bool((b[1:] < b[:-1]).any()):
            raise NearError(
                "SparseTensor voxels must be grouped by batch item in increasing order "
                "(sort coords by their batch column first, e.g. with SparseTensor.from_list)."
            )
        counts = torch.bincount(b, minlength=batch_size).tolist()
        layout, start = [], 0
        for n in counts:
            layout.append(slice(start, start + n))
            start += n
        return layout

    @classmethod
    def from_list(cls, coords: Sequence[torch.Tensor], feats: Sequence[torch.Tensor]) -> SparseTensor:
        """Batch per-item ``coords [N_i, 3]`` (x, y, z) and ``feats [N_i, *C]`` into one tensor."""
        if len(coords) != len(feats) or not coords:
            raise NearError("from_list needs equally many (>= 1) coordinate and feature tensors.")
        cs = []
        for b, c in enumerate(coords):
            if c.dim() != 2 or c.shape[1] != 3:
                raise NearError(f"item {b}: coords must be [N, 3] (x, y, z); got {tuple(c.shape)}.")
            bcol = torch.full((c.shape[0], 1), b, dtype=torch.int32, device=c.device)
            cs.append(torch.cat([bcol, c.to(torch.int32)], dim=1))
        return cls(torch.cat(list(feats), 0), torch.cat(cs, 0), batch_size=len(coords))

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> torch.Size:
        return self._shape

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def layout(self) -> list[slice]:
        return self._layout

    @property
    def seqlens(self) -> list[int]:
        """Number of voxels of each batch item."""
        return [s.stop - s.start for s in self._layout]

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def scale(self) -> Scale:
        return self._scale  # type: ignore[return-value]

    @property
    def batch_index(self) -> torch.Tensor:
        """int64 ``[N]`` batch item of each voxel."""
        if self._batch_idx is None or self._batch_idx.device != self.coords.device:
            self._batch_idx = self.coords[:, 0].long()
        return self._batch_idx

    def dim(self) -> int:
        return len(self._shape)

    def __len__(self) -> int:
        return self.feats.shape[0]

    def __repr__(self) -> str:
        return (
            f"SparseTensor(shape={tuple(self.shape)}, voxels={self.feats.shape[0]}, "
            f"dtype={self.dtype}, device={self.device}, scale={self._scale})"
        )

    # ------------------------------------------------------------------ derived tensors
    def replace(self, feats: torch.Tensor, coords: torch.Tensor | None = None) -> SparseTensor:
        """Same voxels (and caches) with new ``feats``; new ``coords`` start a fresh cache."""
        if feats.shape[0] != self.feats.shape[0]:
            raise NearError(f"replace: expected {self.feats.shape[0]} feature rows, got {feats.shape[0]}.")
        shape = torch.Size([self._shape[0], *feats.shape[1:]])
        if coords is None:
            out = SparseTensor(feats, self.coords, shape, self._layout, self._scale, self._spatial_cache)
            out._batch_idx = self._batch_idx
            return out
        return SparseTensor(feats, coords, shape, None, self._scale, None)

    def to(self, *args: Any, **kwargs: Any) -> SparseTensor:
        """Like ``Tensor.to``: a dtype changes feats only; a device moves feats and coords."""
        feats = self.feats.to(*args, **kwargs)
        if feats.device != self.coords.device:
            coords = self.coords.to(feats.device)
            return SparseTensor(feats, coords, self._shape[:1] + feats.shape[1:], self._layout, self._scale)
        return self.replace(feats)

    def type(self, dtype: torch.dtype) -> SparseTensor:
        return self.replace(self.feats.type(dtype))

    def float(self) -> SparseTensor:
        return self.replace(self.feats.float())

    def half(self) -> SparseTensor:
        return self.replace(self.feats.half())

    def detach(self) -> SparseTensor:
        return self.replace(self.feats.detach())

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def reshape(self, *shape: int) -> SparseTensor:
        """Reshape the channel dims: ``feats [N, *C] -> [N, *shape]``."""
        return self.replace(self.feats.reshape(self.feats.shape[0], *shape))

    def unbind(self, dim: int) -> list[SparseTensor]:
        """Split along a channel dim (``dim >= 1`` of feats)."""
        if dim == 0:
            raise NearError("SparseTensor.unbind: dim 0 is the voxel dim; index batch items with x[b].")
        return [self.replace(f) for f in self.feats.unbind(dim)]

    def __getitem__(self, idx: int | slice | Sequence[int] | torch.Tensor) -> SparseTensor:
        """Select batch items (renumbered from 0)."""
        if isinstance(idx, int):
            items = [idx % self.batch_size]
        elif isinstance(idx, slice):
            items = list(range(*idx.indices(self.batch_size)))
        elif isinstance(idx, torch.Tensor):
            items = idx.nonzero().flatten().tolist() if idx.dtype == torch.bool else idx.flatten().tolist()
        else:
            items = list(idx)
        feats, coords = [], []
        for new_b, b in enumerate(items):
            c = self.coords[self._layout[b]].clone()
            c[:, 0] = new_b
            coords.append(c)
            feats.append(self.feats[self._layout[b]])
        return SparseTensor(torch.cat(feats, 0), torch.cat(coords, 0), batch_size=len(items))

    def dense(self, resolution: int | Sequence[int] | None = None) -> torch.Tensor:
        """Scatter to a dense ``[B, *C, X, Y, Z]`` grid (zeros where inactive); for tests/debugging."""
        if resolution is None:
            res = [int(v) + 1 for v in self.coords[:, 1:].max(0).values.tolist()]
        elif isinstance(resolution, int):
            res = [resolution] * 3
        else:
            res = list(resolution)
        C = self.feats.shape[1:]
        out = self.feats.new_zeros(self.batch_size, *res, *C)
        c = self.coords.long()
        out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = self.feats
        return out.permute(0, *range(4, 4 + len(C)), 1, 2, 3).contiguous()

    # ------------------------------------------------------------------ spatial caches
    def register_spatial_cache(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` for the current scale (shared with derived tensors)."""
        self._spatial_cache.setdefault(str(self._scale), {})[key] = value

    def get_spatial_cache(self, key: str) -> Any:
        """The cached value for ``key`` at the current scale, or None."""
        return self._spatial_cache.get(str(self._scale), {}).get(key)

    # ------------------------------------------------------------------ arithmetic
    def _per_voxel(self, other: Any) -> Any:
        if isinstance(other, SparseTensor):
            if other.feats.shape[0] != self.feats.shape[0]:
                raise NearError("SparseTensor arithmetic needs both operands on the same voxels.")
            return other.feats
        if isinstance(other, torch.Tensor) and other.dim() > 0:
            try:
                per_batch = torch.broadcast_to(other, self._shape)
            except RuntimeError as e:
                raise NearError(
                    f"Cannot broadcast a tensor of shape {tuple(other.shape)} onto a SparseTensor of shape "
                    f"{tuple(self._shape)} (dense operands are per batch item: [B, *C]); "
                    "use x.replace(x.feats op t) for per-voxel operands."
                ) from e
            return per_batch[self.batch_index]
        return other

    def _elemwise(self, other: Any, op: Callable[[torch.Tensor, Any], torch.Tensor]) -> SparseTensor:
        return self.replace(op(self.feats, self._per_voxel(other)))

    def __neg__(self) -> SparseTensor:
        return self.replace(-self.feats)

    def __add__(self, other: Any) -> SparseTensor:
        return self._elemwise(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other: Any) -> SparseTensor:
        return self._elemwise(other, torch.sub)

    def __rsub__(self, other: Any) -> SparseTensor:
        return self._elemwise(other, lambda a, b: b - a)

    def __mul__(self, other: Any) -> SparseTensor:
        return self._elemwise(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> SparseTensor:
        return self._elemwise(other, torch.div)


def sparse_cat(tensors: Sequence[SparseTensor], dim: int = -1) -> SparseTensor:
    """Concatenate the features of tensors on the same voxels along a channel dim."""
    if dim == 0:
        raise NearError("sparse_cat concatenates channels; dim 0 (voxels) is not supported.")
    first = tensors[0]
    for t in tensors[1:]:
        if t.feats.shape[0] != first.feats.shape[0]:
            raise NearError("sparse_cat needs tensors on the same voxels.")
    return first.replace(torch.cat([t.feats for t in tensors], dim=dim))
