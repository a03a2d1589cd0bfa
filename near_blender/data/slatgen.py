"""SLAT files of one asset from its rendered views (paper 3.3 steps 2-3, TRELLIS's format).

* ``slat_lh.npz``     -- LH-SLAT: features of the ``homog`` views (uniform white world);
* ``slat_bc.npz``     -- base-colour SLAT: the same views' base-colour AOV as the colour;
* ``slat_shaded.npz`` -- shaded SLAT: the ``shaded`` views (TRELLIS's three-light rig).

Each holds ``coords (N, 3) uint8`` (the 64^3 surface voxels) and ``feats (N, 8) float32``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.atomic import atomic_path
from .backproject import Aggregate, accumulate
from .features import FeatureExtractor
from .sampling import ViewTask
from .slat_io import save_slat_npz
from .views import read_view

SLAT_FILES = {
    "slat_lh": ("homog", "rgba"),
    "slat_bc": ("homog", "base_color"),
    "slat_shaded": ("shaded", "rgba"),
}


def save_npz_atomic(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` through a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def save_slat(path: str | os.PathLike[str], coords: np.ndarray, feats: np.ndarray) -> None:
    """The authors' SLAT ``.npz`` (``coords (N, 3) uint8``, ``feats (N, C) float32``), validated."""
    save_slat_npz(path, coords, feats)


def build_slats(
    asset_dir: str | os.PathLike[str],
    coords: np.ndarray,
    tasks: Sequence[ViewTask],
    extractor: FeatureExtractor,
) -> dict[str, dict[str, Any]]:
    """Aggregate the asset's views into its SLAT files; returns per-file statistics."""
    root = Path(asset_dir)
    by_set: dict[str, list[ViewTask]] = {}
    for t in tasks:
        by_set.setdefault(t.set, []).append(t)
    wanted = {name: spec for name, spec in SLAT_FILES.items() if by_set.get(spec[0])}
    aggs = {name: Aggregate.empty(len(coords), 7) for name in wanted}
    for set_name in sorted({spec[0] for spec in wanted.values()}):
        for t in by_set[set_name]:
            view = read_view(root / t.file)
            alpha = view["rgba"][..., 3]
            for name, (s, colour_key) in wanted.items():
                if s != set_name:
                    continue
                # Both the colour and the base-colour AOV are coverage-weighted (premultiplied).
                rgb = view[colour_key][..., :3]
                fmap = extractor.view_maps(rgb, view["normal"], alpha)
                accumulate(aggs[name], coords, t.camera, fmap, view["depth"], alpha, view["normal"])
    stats: dict[str, dict[str, Any]] = {}
    for name, agg in aggs.items():
        feats = extractor.finalize(agg)
        save_slat(root / f"{name}.npz", coords, feats)
        stats[name] = {
            "views": agg.n_views,
            "voxels_seen": int((agg.count > 0).sum()),
            "feature": extractor.name,
        }
    return stats
