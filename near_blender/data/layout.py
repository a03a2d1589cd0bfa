"""Dataset folder layout, manifest, resume and sharding of ``near datagen`` (bpy-free).

::

    DIR/
      config.json              generation settings; every run into DIR must match them
      manifest.jsonl           one JSON object per line: assets and environment maps with status
      envmaps/<name>.exr       the environment maps used (float32 equirect, top row first)
      assets/<asset_id>/
        homog/NNN.exr          stage-1 views, uniform white world (RGBA, depth, normal, base colour,
                               roughness, metallic)
        shaded/NNN.exr         same cameras, TRELLIS three-light rig (RGBA, depth, normal)
        cond/NNN.exr           TRELLIS conditioning cameras, rig (RGBA)
        inputs/NNN.exr         stage-1 inputs, random lighting (RGBA, depth, normal)
        inputs_holdout/NNN_HHH.exr  the input cameras under the held-out maps (all G-buffers)
        relit/VVV_LLL.exr      stage-2 views x environment maps (all G-buffers + shadow)
        relit_holdout/VVV_HHH.exr  the same views under the held-out maps
        cameras.json, lights.json, asset.json
        mesh_voxels.npz        64^3 surface voxels ``coords (N, 3) uint8``
        slat_lh.npz, slat_bc.npz, slat_shaded.npz   ``coords (N, 3) uint8, feats (N, 8) float32``
        status.json            written last: the asset is finished exactly when this exists

Every file is written atomically (temporary name + rename), so a killed run leaves complete files
and temporaries (``.tmp-*``) only; a resumed run deletes the temporaries, keeps the complete view
files of an unfinished asset and renders the rest.

Manifest lines are appended under a file lock (shards may share DIR) and the file is compacted
(one line per id, the last one wins, sorted by id) at the end of every run. Fields that change
from run to run (times, host, shard) live under ``"run"``; everything else is deterministic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import NearError
from ..utils.atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries

MANIFEST = "manifest.jsonl"
CONFIG = "config.json"
ASSETS = "assets"
STATUS = "status.json"
LOCK = ".manifest.lock"

DONE, FAILED = "done", "failed"
RUN_KEY = "run"  # per-run, non-deterministic fields of a manifest entry


HELD_OUT_FRACTION = 0.2  # the fraction of assets every trainer and the evaluation hold out by default


def is_held_out(asset_id: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    """Stable held-out membership of an asset (a hash of its id), shared by the datagen (which
    renders the held-out maps' views only for held-out assets), the trainers and the evaluation."""
    h = int(hashlib.sha1(f"near-split:{asset_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < fraction


def shard_of(asset_id: str, n: int) -> int:
    """The shard (0..n-1) an asset belongs to: a stable hash of its id, so adding assets never
    moves existing ones to another shard."""
    if n < 1:
        raise NearError("The number of shards must be >= 1.")
    return int(hashlib.sha1(asset_id.encode("utf-8")).hexdigest()[:12], 16) % n


def select_shard(ids: Iterable[str], index: int, count: int) -> list[str]:
    """The ids of shard ``index`` of ``count`` (shards partition the ids exactly)."""
    return [i for i in ids if shard_of(i, count) == index]


class Dataset:
    """A dataset folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------------------
    def asset_dir(self, asset_id: str) -> Path:
        return self.root / ASSETS / asset_id

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    # -- config --------------------------------------------------------------------------------------
    def ensure_config(self, generation: dict[str, Any]) -> None:
        """Write ``config.json`` or check that the existing one asks for the same data."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / CONFIG
        with self._locked():
            if not path.exists():
                atomic_write_json(path, {"format": "near-datagen/1", "generation": generation})
                return
            try:
                old = json.loads(path.read_text())["generation"]
            except (OSError, ValueError, KeyError) as e:
                raise NearError(f"{path} is unreadable ({e}); delete it or use another --out.") from None
        diff = sorted(k for k in set(old) | set(generation) if old.get(k) != generation.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {generation.get(k)!r}" for k in diff[:6])
            raise NearError(
                f"{self.root} holds a dataset made with other settings ({shown}). Every run into one "
                "folder (shards, resumes) needs the same settings and assets: use the same options or "
                "another --out."
            )

    # -- per-asset status (the truth) ---------------------------------------------------------------
    def read_status(self, asset_id: str) -> dict[str, Any] | None:
        p = self.asset_dir(asset_id) / STATUS
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except ValueError:  # cannot happen with atomic writes; treat as unfinished
            return None

    def write_status(self, entry: dict[str, Any]) -> None:
        atomic_write_json(self.asset_dir(entry["id"]) / STATUS, entry)

    def has_work(self, asset_id: str) -> bool:
        d = self.asset_dir(asset_id)
        return d.exists() and any(d.iterdir())

    def prepare_asset(self, asset_id: str, keep: Iterable[str] = ()) -> list[str]:
        """Make an unfinished asset folder ready to continue: delete temporaries and every file that
        is not in ``keep`` (relative paths of complete views to reuse). Returns the kept files."""
        d = self.asset_dir(asset_id)
        if not d.exists():
            return []
        remove_stale_temporaries(d)
        keep_set = set(keep)
        kept = []
        for p in sorted(d.rglob("*")):
            if p.is_file():
                rel = p.relative_to(d).as_posix()
                if rel in keep_set:
                    kept.append(rel)
                else:
                    p.unlink()
        for p in sorted(d.rglob("*"), reverse=True):  # empty folders
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        return kept

    def clear_asset(self, asset_id: str) -> None:
        """Delete everything in an asset folder (a failed asset keeps only its status)."""
        self.prepare_asset(asset_id, keep=())

    # -- manifest ----------------------------------------------------------------------------------
    def append_manifest(self, entries: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        if not lines:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(), open(self.manifest_path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def read_manifest(self) -> dict[str, dict[str, Any]]:
        """id -> latest entry (a torn last line from a killed writer is ignored)."""
        out: dict[str, dict[str, Any]] = {}
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and "id" in e:
                out[e["id"]] = e
        return out

    def compact_manifest(self) -> int:
        """Rewrite the manifest with one line per id (latest wins), sorted by id; returns the count."""
        with self._locked():
            entries = self.read_manifest()
            text = "".join(json.dumps(entries[k], sort_keys=True) + "\n" for k in sorted(entries))
            atomic_write_text(self.manifest_path, text)
        return len(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on ``DIR/.manifest.lock`` (no-op where fcntl is missing)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: single-machine use, appends are small
            yield
            return
        with open(self.root / LOCK, "a+") as lf:
            fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lf.fileno(), fcntl.LOCK_UN)
