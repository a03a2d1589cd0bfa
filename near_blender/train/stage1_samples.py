"""Stage-1 outputs for the training assets, the inputs of coupled stage-2 training.

NeAR couples its two stages: the renderer has to work on the LH-SLATs that stage 1 actually
produces, not only on the ground-truth ones it is trained on. A small stage 1 leaves errors
(per-voxel noise, colours off); a stage 2 that has seen them learns to render through them.
:func:`write_stage1_samples` runs a trained pipeline's stage 1 on the input views of the given
assets and stores each result beside the others::

    <out>/info.json                       {"model", "steps", "seed", "inputs"}
    <out>/<asset id>/input<k>.npz         coords [N, 3] int16, feats [N, C] float32 (de-normalized)

Every file is written atomically and existing ones are kept, so an interrupted run resumes.
:class:`Stage1Samples` reads them back for ``Stage2Config.stage1_samples``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..data.dataset import NearDataset
from ..utils.atomic import atomic_path, atomic_write_json

INFO = "info.json"


def sample_path(out: Path, asset_id: str, index: int) -> Path:
    return out / asset_id / f"input{index}.npz"


def write_stage1_samples(
    model: str,
    data: str,
    out: str,
    asset_ids: list[str] | None = None,
    inputs: int = 2,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run stage 1 of pipeline ``model`` on the first ``inputs`` input views of each asset
    (default: the training split of ``data``) and write the results under ``out``."""
    from ..pipeline import NearPipeline

    ds = NearDataset(data)
    ids = asset_ids if asset_ids is not None else ds.split(0.2)[0]
    folder = Path(out)
    info = {"model": str(model), "steps": steps, "seed": seed, "inputs": inputs}
    old = folder / INFO
    if old.is_file() and json.loads(old.read_text()) != info:
        raise NearError(
            f"{out} holds stage-1 samples made with other settings ({old.read_text().strip()}); "
            "use another folder or delete it."
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(old, info)
    pipe = NearPipeline.from_pretrained(model)
    jobs = []
    for aid in ids:
        recs = sorted(ds.views(aid, "inputs"), key=lambda r: r.index)[:inputs]
        if not recs:
            raise NearError(f"{aid} has no input views in {data}; re-run `near datagen` with --input-views.")
        jobs += [(aid, r) for r in recs if not sample_path(folder, aid, r.index).is_file()]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="stage-1 samples", unit="image")
    coords_of: dict[str, np.ndarray] = {}
    for aid, rec in jobs:
        if aid not in coords_of:
            coords_of[aid] = ds.prior_coords(aid)
        rgba = ds.read(rec)["rgba"]
        feats = pipe.image_to_slat(
            rgba,
            coords_of[aid],
            seed=seed + rec.index,
            steps=steps,
            camera=(rec.camera.viewmat, rec.camera.K),
        )
        path = sample_path(folder, aid, rec.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, coords=coords_of[aid].astype(np.int16), feats=np.asarray(feats, np.float32))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"out": str(folder), "assets": len(ids), "written": len(jobs)}


class Stage1Samples:
    """The stage-1 samples written by :func:`write_stage1_samples`, per asset: one folder, or
    several (one per dataset of a :class:`~near_blender.data.dataset.DatasetUnion`) read as one."""

    def __init__(self, folders: str | Path | Sequence[str | Path]) -> None:
        self.folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
        for folder in self.folders:
            if not (folder / INFO).is_file():
                raise NearError(
                    f"{folder} holds no stage-1 samples (no {INFO}); make them with "
                    "`near train stage1-samples --model M --data D --out F`."
                )
        self._files: dict[str, list[Path]] = {}
        # per file: (the voxels it was aligned to, its features on them), so each file is read once
        self._aligned_cache: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def files(self, asset_id: str) -> list[Path]:
        if asset_id not in self._files:
            self._files[asset_id] = sorted(p for f in self.folders for p in (f / asset_id).glob("input*.npz"))
        return self._files[asset_id]

    def read(self, asset_id: str, choice: float, coords: np.ndarray) -> np.ndarray | None:
        """Features ``[N, C]`` of one sample of ``asset_id`` (picked by ``choice`` in [0, 1)) on the
        voxels ``coords [N, 3]`` (the ground truth's, in its order); None if the asset has none."""
        files = self.files(asset_id)
        if not files:
            return None
        path = files[min(int(choice * len(files)), len(files) - 1)]
        hit = self._aligned_cache.get(path)
        if hit is None or not np.array_equal(hit[0], coords):
            hit = (np.array(coords, copy=True), self._aligned(asset_id, path, coords))
            self._aligned_cache[path] = hit
        return hit[1]

    def _aligned(self, asset_id: str, path: Path, coords: np.ndarray) -> np.ndarray:
        try:
            with np.load(path) as z:
                c, f = np.asarray(z["coords"]).astype(np.int64), np.asarray(z["feats"], np.float32)
        except Exception as e:
            raise NearError(
                f"Cannot read the stage-1 sample {path} ({e}); delete it and rerun stage1-samples."
            ) from None
        if np.array_equal(c, coords):
            return f
        # same voxels in another order: reorder; other voxels: the sample cannot stand in for them
        kc, kg = _voxel_keys(c), _voxel_keys(coords)
        order = np.argsort(kc)
        pos = np.searchsorted(kc[order], kg)
        pos = np.clip(pos, 0, len(kc) - 1)
        if not np.array_equal(kc[order][pos], kg):
            raise NearError(
                f"The stage-1 sample {path} covers other voxels than {asset_id}'s SLAT; "
                "the samples must be made on the same dataset."
            )
        return f[order][pos]


def _voxel_keys(coords: np.ndarray) -> np.ndarray:
    """One integer per voxel of a 64^3 grid (x-major)."""
    c = np.asarray(coords, np.int64)
    return (c[:, 0] * 64 + c[:, 1]) * 64 + c[:, 2]
