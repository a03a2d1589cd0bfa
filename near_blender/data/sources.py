"""Asset sources: what ``--assets`` / ``--procedural`` name, each with a stable asset id.

An asset id is a short, file-system safe, deterministic name; it names the asset's folder, keys the
manifest, seeds the asset's random cameras and lights, and decides its shard. Ids never depend on
the machine (files are identified by their path relative to the ``--assets`` argument that found
them), so every machine of a farm computes the same ids from the same inputs.

Sources that cannot be an asset (a missing file, an unsupported format, a folder without asset
files) are kept as sources with an ``error``: the job records them in the manifest as failed and
goes on with the rest.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procedural import ID_PREFIX, parse_procedural_spec, procedural_spec

IMPORTABLE = (".blend", ".glb", ".gltf", ".obj", ".fbx", ".ply")


@dataclass(frozen=True)
class AssetSource:
    """One asset to generate data for.

    Attributes:
        id: stable asset id (folder name, manifest key, seed, shard).
        kind: ``"procedural"``, ``"file"`` or ``"objects"`` (Blender objects, from the UI operator).
        path: the file (``kind == "file"``).
        spec: the procedural spec (``kind == "procedural"``).
        label: what the user gave (for messages and the manifest).
        error: why this source cannot be rendered (it is then recorded as a failed asset).
    """

    id: str
    kind: str
    label: str
    path: str | None = None
    spec: dict[str, Any] | None = None
    error: str | None = None
    objects: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "label": self.label}
        if self.objects:
            d["objects"] = list(self.objects)
        if self.path is not None:
            d["path"] = self.path
        if self.spec is not None:
            d["spec"] = self.spec
        return d


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def slug(text: str, limit: int = 40) -> str:
    """File-system safe lower-case name: letters, digits, '-' and '_'."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_").lower()
    return (s or "asset")[:limit]


def file_asset_id(relpath: str) -> str:
    """Id of a file asset from its path relative to the ``--assets`` argument that found it."""
    rel = relpath.replace(os.sep, "/")
    return f"{slug(Path(rel).stem)}-{short_hash(rel)}"


def collect_sources(
    assets: list[str], procedural: int = 0, seed: int = 0, library: str = "v1"
) -> list[AssetSource]:
    """All asset sources of a run, sorted by id, ids unique.

    ``assets`` items are files, folders (searched recursively for importable files) or procedural
    specs ``proc:SHAPE[,key=value...]``; ``procedural`` adds that many seeded assets of the
    procedural ``library`` (ids ``proc-NNNN-shape`` for v1, ``proc2-NNNN-shape`` for v2).
    """
    out: list[AssetSource] = []
    prefix = ID_PREFIX[library]
    for i in range(max(0, int(procedural))):
        spec = procedural_spec(i, seed, library)
        label = f"procedural #{i}" if library == "v1" else f"procedural {library} #{i}"
        out.append(AssetSource(f"{prefix}-{i:04d}-{spec['shape']}", "procedural", label, spec=spec))
    for item in assets:
        out.extend(_sources_from_item(str(item)))
    by_id: dict[str, AssetSource] = {}
    for s in out:
        other = by_id.get(s.id)
        if other is not None:
            if (other.path, other.spec) == (s.path, s.spec):  # the same asset named twice: once
                continue
            # Two different files with the same relative name: disambiguate by the full path.
            s = AssetSource(f"{s.id}-{short_hash(str(s.path))}", s.kind, s.label, s.path, s.spec, s.error)
        by_id[s.id] = s
    return [by_id[k] for k in sorted(by_id)]


def object_sources(names: list[str], blend_file: str = "", each: bool = False) -> list[AssetSource]:
    """Sources for Blender objects (the UI operator): one asset of all ``names``, or one per object
    with ``each``. Ids hash the .blend file name and the object names."""
    groups = [[n] for n in sorted(names)] if each else [sorted(names)]
    out = []
    for g in groups:
        label = g[0] if len(g) == 1 else f"{g[0]} + {len(g) - 1} more"
        key = Path(blend_file).name + "/" + "/".join(g)
        out.append(AssetSource(f"obj-{slug(g[0])}-{short_hash(key)}", "objects", label, objects=tuple(g)))
    return out


def _sources_from_item(item: str) -> list[AssetSource]:
    if item.startswith("proc:"):
        try:
            spec = parse_procedural_spec(item)
        except ValueError as e:
            return [AssetSource(f"proc-invalid-{short_hash(item)}", "procedural", item, error=str(e))]
        return [AssetSource(f"proc-{spec['shape']}-{short_hash(item)}", "procedural", item, spec=spec)]
    p = Path(item).expanduser()
    if p.is_dir():
        files = sorted(
            f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMPORTABLE and not _hidden(f, p)
        )
        if not files:
            return [
                AssetSource(
                    f"{slug(p.name)}-{short_hash(p.name + '/')}",
                    "file",
                    item,
                    path=str(p),
                    error=(
                        f"Folder {p} contains no asset files ({', '.join(IMPORTABLE)}). "
                        "Point --assets at files or at a folder that holds them."
                    ),
                )
            ]
        return [
            AssetSource(
                file_asset_id(f"{p.name}/{f.relative_to(p).as_posix()}"), "file", item, path=str(f.resolve())
            )
            for f in files
        ]
    aid = file_asset_id(p.name)
    if not p.exists():
        return [
            AssetSource(aid, "file", item, path=str(p), error=f"Asset file not found: {p}. Check the path.")
        ]
    if p.suffix.lower() not in IMPORTABLE:
        return [
            AssetSource(
                aid,
                "file",
                item,
                path=str(p),
                error=f"{p.name}: unsupported format {p.suffix or '(none)'}; use one of {', '.join(IMPORTABLE)}.",
            )
        ]
    return [AssetSource(aid, "file", item, path=str(p.resolve()))]


def _hidden(f: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in f.relative_to(root).parts)
