"""SLAT files in the NeAR authors' format: ``.npz`` with ``coords (N, 3) uint8`` and ``feats (N, C) float32``.

Coordinates are voxel indices (x, y, z) of the 64³ grid; features are the (de-normalized) latent
channels (8 for TRELLIS latents). Writes are atomic; reads validate and explain what is wrong.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .. import NearError
from ..utils.atomic import atomic_path

GRID = 64


def _as_numpy(a: object) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(a)


def save_slat_npz(
    path: str | os.PathLike[str], coords: object, feats: object, resolution: int = GRID
) -> Path:
    """Write ``coords [N, 3]`` (ints in [0, resolution)) and ``feats [N, C]`` to ``path`` atomically.

    Coordinates are stored as uint8 (the authors' layout), features as float32.
    """
    c, f = _as_numpy(coords), _as_numpy(feats)
    if c.ndim != 2 or c.shape[1] != 3:
        raise NearError(f"SLAT coords must be [N, 3] (x, y, z); got shape {c.shape}.")
    if f.ndim != 2 or f.shape[0] != c.shape[0]:
        raise NearError(f"SLAT feats must be [N, C] with N = {c.shape[0]}; got shape {f.shape}.")
    if not np.issubdtype(c.dtype, np.integer):
        if not np.all(np.equal(np.round(c), c)):
            raise NearError("SLAT coords must be integer voxel indices.")
    if c.size and (c.min() < 0 or c.max() >= min(resolution, 256)):
        raise NearError(f"SLAT coords must lie in [0, {resolution}); got {c.min()}..{c.max()}.")
    if not np.all(np.isfinite(f)):
        raise NearError("SLAT feats contain NaN or infinite values; refusing to write them.")
    path = Path(path)
    if path.suffix != ".npz":
        raise NearError(f"SLAT files use the .npz extension (got {path.name}).")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, coords=c.astype(np.uint8), feats=f.astype(np.float32))
    return path


def load_slat_npz(
    path: str | os.PathLike[str], resolution: int = GRID, data: bytes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a SLAT file -> ``(coords int32 [N, 3], feats float32 [N, C])``, validated.

    ``data``: the file's bytes, when they are held elsewhere (a sidecar packed into a .blend);
    ``path`` then only names it in error messages."""
    import io

    path = Path(path)
    if data is None and not path.is_file():
        raise NearError(f"SLAT file {path} does not exist.")
    try:
        with np.load(path if data is None else io.BytesIO(data), allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = {"coords", "feats"} - keys
            if missing:
                raise NearError(
                    f"SLAT file {path} lacks {sorted(missing)} (has {sorted(keys)}); "
                    "expected 'coords' and 'feats'."
                )
            c, f = npz["coords"], npz["feats"]
    except NearError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        # (numpy's own words for a file that is not a zip speak of "pickled data": not helpful here)
        raise NearError(
            f"SLAT file {path} is not a readable LH-SLAT (.npz) archive: it is damaged or another kind of "
            "file. Re-import the image to write it again (File > Import > Image as NeAR Asset)."
        ) from None
    if c.ndim != 2 or c.shape[1] != 3:
        raise NearError(f"SLAT file {path}: coords must be (N, 3); got {c.shape}.")
    if f.ndim != 2 or f.shape[0] != c.shape[0]:
        raise NearError(f"SLAT file {path}: feats must be (N, C) with N = {c.shape[0]}; got {f.shape}.")
    if not np.issubdtype(c.dtype, np.integer):
        raise NearError(f"SLAT file {path}: coords must be integers (got {c.dtype}).")
    c = c.astype(np.int32)
    if c.size and (c.min() < 0 or c.max() >= resolution):
        raise NearError(f"SLAT file {path}: coords must lie in [0, {resolution}); got {c.min()}..{c.max()}.")
    f = f.astype(np.float32)
    if not np.all(np.isfinite(f)):
        raise NearError(f"SLAT file {path}: feats contain NaN or infinite values.")
    if len(np.unique(c, axis=0)) != len(c):
        raise NearError(f"SLAT file {path}: duplicate voxel coordinates.")
    return c, f
