"""Reading a ``near datagen`` dataset for training and evaluation (bpy-free).

A :class:`NearDataset` indexes a dataset folder (layout in :mod:`near_blender.data.layout`): the
finished assets, their per-view records (file, camera, lighting), their SLATs and the environment
maps. :class:`DatasetUnion` reads several such folders as one training set. :class:`Stage2Views`
is the stage-2 training set: one item per (asset, relit view).

Splits are deterministic: an asset is held out when a stable hash of its id falls in the held-out
fraction, so adding assets never moves existing ones between train and test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..render.camera import Camera
from ..render.envmap import Environment
from ..render.exr import read_envmap
from .layout import HELD_OUT_FRACTION, is_held_out
from .slat_io import load_slat_npz
from .views import read_view


def split_ids(asset_ids: Sequence[str], held_out_fraction: float) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids) of sorted ids by :func:`~near_blender.data.layout.is_held_out`;
    at least one asset on each side when there are two or more."""
    ids = list(asset_ids)
    test = [a for a in ids if is_held_out(a, held_out_fraction)]
    train = [a for a in ids if a not in test]
    if len(ids) >= 2 and not test:
        test, train = train[-1:], train[:-1]
    if len(ids) >= 2 and not train:
        train, test = test[:1], test[1:]
    return train, test


@dataclass(frozen=True)
class ViewRecord:
    """One rendered view of an asset."""

    asset_id: str
    file: str  # relative to the asset folder, e.g. "relit/003_001.exr"
    set: str  # homog | shaded | cond | inputs | inputs_holdout | relit | relit_holdout
    index: int
    camera: Camera
    lighting: dict[str, Any]
    meta: dict[str, Any]

    @property
    def envmap(self) -> str | None:
        return self.lighting.get("envmap") if self.lighting.get("type") == "envmap" else None


class NearDataset:
    """Index of one ``near datagen`` output folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not (self.root / "manifest.jsonl").is_file():
            raise NearError(
                f"{self.root} is not a NeAR dataset (no manifest.jsonl). Generate one with "
                "`near datagen --out DIR ...` first."
            )
        self._slat_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._env_cache: dict[str, Environment] = {}
        self._views_cache: dict[str, list[ViewRecord]] = {}

    @cached_property
    def config(self) -> dict[str, Any]:
        p = self.root / "config.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    @cached_property
    def manifest(self) -> list[dict[str, Any]]:
        out = {}
        for line in (self.root / "manifest.jsonl").read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                out[e["id"]] = e
        return [out[k] for k in sorted(out)]

    @cached_property
    def asset_ids(self) -> list[str]:
        """Finished assets, sorted."""
        ids = [e["id"] for e in self.manifest if e.get("kind") == "asset" and e.get("status") == "done"]
        return [i for i in ids if (self.root / "assets" / i / "status.json").is_file()]

    def split(self, held_out_fraction: float = HELD_OUT_FRACTION) -> tuple[list[str], list[str]]:
        """(train ids, held-out ids); at least one asset on each side when there are two or more."""
        return split_ids(self.asset_ids, held_out_fraction)

    @property
    def label(self) -> str:
        """How error messages name the dataset: its folder."""
        return str(self.root)

    @property
    def holdout_envmaps(self) -> list[str]:
        return list(self.config.get("generation", self.config).get("holdout_envmaps", []))

    def asset_dir(self, asset_id: str) -> Path:
        return self.root / "assets" / asset_id

    def views(self, asset_id: str, set_name: str | None = None) -> list[ViewRecord]:
        if asset_id not in self._views_cache:
            d = self.asset_dir(asset_id)
            cams = json.loads((d / "cameras.json").read_text())["views"]
            lights = {v["file"]: v["lighting"] for v in json.loads((d / "lights.json").read_text())["views"]}
            recs = []
            for v in cams:
                meta = {k: v[k] for k in ("view", "light") if k in v}
                recs.append(
                    ViewRecord(
                        asset_id,
                        v["file"],
                        v["set"],
                        int(v["index"]),
                        Camera.from_dict(v["camera"]),
                        lights.get(v["file"], {}),
                        meta,
                    )  # fmt: skip
                )
            self._views_cache[asset_id] = recs
        recs = self._views_cache[asset_id]
        return [r for r in recs if set_name is None or r.set == set_name]

    def slat(self, asset_id: str, kind: str = "lh") -> tuple[np.ndarray, np.ndarray]:
        """(coords int32 [N, 3], feats float32 [N, 8]) of ``slat_<kind>.npz`` (lh | bc | shaded)."""
        key = (asset_id, kind)
        if key not in self._slat_cache:
            self._slat_cache[key] = load_slat_npz(self.asset_dir(asset_id) / f"slat_{kind}.npz")
        return self._slat_cache[key]

    def prior_coords(self, asset_id: str) -> np.ndarray:
        """The geometry-prior voxels ``[N, 3]`` (int64) stage 1 runs on: ``mesh_voxels.npz`` (the
        asset's mesh voxelized), else the LH-SLAT's coords."""
        p = self.asset_dir(asset_id) / "mesh_voxels.npz"
        try:
            if p.is_file():
                with np.load(p) as z:
                    return np.asarray(z["coords"]).astype(np.int64)
            return np.asarray(self.slat(asset_id, "lh")[0]).astype(np.int64)
        except NearError:
            raise
        except Exception as e:
            raise NearError(
                f"{asset_id}: cannot read its voxels ({e}); re-run `near datagen` for it."
            ) from None

    def slat_features(self, asset_id: str, with_bc: bool) -> tuple[np.ndarray, np.ndarray]:
        """(coords [N, 3], feats [N, 8 or 16]): the LH-SLAT, with the base-colour SLAT's channels
        appended when ``with_bc`` (the paper's "LH + base color" input, table 3)."""
        coords, feats = self.slat(asset_id, "lh")
        if with_bc:
            c2, f2 = self.slat(asset_id, "bc")
            if not np.array_equal(coords, c2):
                raise NearError(f"{asset_id}: slat_lh and slat_bc have different voxels.")
            feats = np.concatenate([feats, f2], axis=1)
        return coords, feats

    def envmap(self, name: str) -> Environment:
        if name not in self._env_cache:
            self._env_cache[name] = read_envmap(self.root / "envmaps" / f"{name}.exr")
        return self._env_cache[name]

    def environment(self, rec: ViewRecord) -> Environment:
        """The environment a view was lit by (its map with the view's Mapping rotation and strength)."""
        if rec.envmap is None:
            raise NearError(f"{rec.asset_id}/{rec.file} is not lit by an environment map ({rec.lighting}).")
        env = self.envmap(rec.envmap).with_rotation(float(rec.lighting.get("rotation_z", 0.0)))
        s = float(rec.lighting.get("strength", 1.0))
        return env.scaled(s) if s != 1.0 else env

    def read(self, rec: ViewRecord) -> dict[str, np.ndarray]:
        return read_view(self.asset_dir(rec.asset_id) / rec.file)


class DatasetUnion:
    """Several ``near datagen`` folders read as one training set (e.g. ``data/default`` and the
    larger ``data/v2``): the union of their assets, each read from the folder that holds it.

    The folders must agree on what is held out (the same held-out environment maps), and an asset
    id may appear in one folder only; the split is the same hash of the id as a single folder's,
    so an asset is held out here exactly when it is held out in its own folder. Environment maps
    of the same name are read from the first folder that has them (the datagen copies the same
    studio HDRIs into every dataset).
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        if not roots:
            raise NearError("No dataset folders given; name at least one `near datagen` output.")
        self.parts = [NearDataset(r) for r in roots]
        maps = {tuple(sorted(p.holdout_envmaps)) for p in self.parts}
        if len(maps) > 1:
            names = ", ".join(f"{p.root}: {p.holdout_envmaps}" for p in self.parts)
            raise NearError(
                f"These datasets hold out different environment maps ({names}); a model trained on "
                "their union would see a held-out map. Render them with the same --holdout-envmaps."
            )
        self._owner: dict[str, NearDataset] = {}
        for part in self.parts:
            for aid in part.asset_ids:
                if aid in self._owner:
                    raise NearError(
                        f"Asset {aid} is in both {self._owner[aid].root} and {part.root}; "
                        "train on one of the two copies."
                    )
                self._owner[aid] = part

    @property
    def label(self) -> str:
        return " + ".join(str(p.root) for p in self.parts)

    @property
    def asset_ids(self) -> list[str]:
        return sorted(self._owner)

    def split(self, held_out_fraction: float = HELD_OUT_FRACTION) -> tuple[list[str], list[str]]:
        return split_ids(self.asset_ids, held_out_fraction)

    @property
    def holdout_envmaps(self) -> list[str]:
        return self.parts[0].holdout_envmaps

    def part(self, asset_id: str) -> NearDataset:
        """The folder that holds ``asset_id``."""
        try:
            return self._owner[asset_id]
        except KeyError:
            raise NearError(f"Asset {asset_id} is in none of {self.label}.") from None

    def asset_dir(self, asset_id: str) -> Path:
        return self.part(asset_id).asset_dir(asset_id)

    def views(self, asset_id: str, set_name: str | None = None) -> list[ViewRecord]:
        return self.part(asset_id).views(asset_id, set_name)

    def slat(self, asset_id: str, kind: str = "lh") -> tuple[np.ndarray, np.ndarray]:
        return self.part(asset_id).slat(asset_id, kind)

    def prior_coords(self, asset_id: str) -> np.ndarray:
        return self.part(asset_id).prior_coords(asset_id)

    def slat_features(self, asset_id: str, with_bc: bool) -> tuple[np.ndarray, np.ndarray]:
        return self.part(asset_id).slat_features(asset_id, with_bc)

    def envmap(self, name: str) -> Environment:
        for part in self.parts:
            if (part.root / "envmaps" / f"{name}.exr").is_file():
                return part.envmap(name)
        raise NearError(f"No environment map {name!r} in {self.label} (envmaps/{name}.exr).")

    def environment(self, rec: ViewRecord) -> Environment:
        return self.part(rec.asset_id).environment(rec)

    def read(self, rec: ViewRecord) -> dict[str, np.ndarray]:
        return self.part(rec.asset_id).read(rec)


AnyDataset = NearDataset | DatasetUnion  # what the trainers read


def open_dataset(data: str | os.PathLike[str] | Sequence[str]) -> AnyDataset:
    """A dataset folder, or a list of them read as one (:class:`DatasetUnion`)."""
    if isinstance(data, (str, os.PathLike)):
        return NearDataset(data)
    return NearDataset(data[0]) if len(data) == 1 else DatasetUnion(data)


def view_targets(view: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Training targets from a view file: ``hdr`` [H,W,3] (premultiplied, as the rasterizer's
    output over a transparent background), ``alpha`` [H,W,1] and, when present, ``base_color``
    [H,W,3], ``roughness``/``metallic``/``shadow``/``shadow_weight`` [H,W,1], ``normal`` [H,W,3]
    (world space), ``depth`` [H,W,1]. Material maps are coverage-weighted like the colour."""
    rgba = view["rgba"]
    out = {"hdr": np.ascontiguousarray(rgba[..., :3]), "alpha": rgba[..., 3:4].copy()}
    for k in ("base_color", "normal"):
        if k in view:
            out[k] = view[k]
    for k in ("roughness", "metallic", "shadow", "shadow_weight", "depth"):
        if k in view:
            out[k] = view[k][..., None]
    return out


class Stage2Views(Sequence):
    """Stage-2 training items: every ``relit`` view of the given assets.

    An item is a dict: ``asset_id``, ``record`` (:class:`ViewRecord`) and the numpy ``targets`` of
    :func:`view_targets` (read lazily from the EXR on access).
    """

    def __init__(self, ds: AnyDataset, asset_ids: Sequence[str], set_name: str = "relit") -> None:
        self.ds = ds
        self.records = [r for a in asset_ids for r in ds.views(a, set_name)]
        if not self.records:
            raise NearError(f"No '{set_name}' views for {len(asset_ids)} asset(s) in {ds.label}.")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        return {"asset_id": rec.asset_id, "record": rec, "targets": view_targets(self.ds.read(rec))}
