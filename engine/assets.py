"""NeAR assets in a Blender scene: which objects they are, where they are, and their LH-SLATs.

A NeAR asset is any object with ``near_asset.is_asset`` set. Its transform places the canonical
asset box [-0.5, 0.5]^3 (Z up) in the world; its LH-SLAT lives in a sidecar ``.npz`` next to the
.blend (``near_asset.sidecar``, usually relative: ``//name.near.npz``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from near_blender import NearError


@dataclass(frozen=True)
class SceneAsset:
    """One NeAR asset instance to render."""

    name: str
    sidecar: Path  # absolute path of the LH-SLAT .npz
    matrix_world: np.ndarray  # [4, 4] object (canonical box) -> world


def sidecar_abspath(obj: Any) -> Path:
    """The absolute path of an object's sidecar (Blender's ``//`` resolved against the .blend)."""
    import bpy

    rel = obj.near_asset.sidecar
    if not rel:
        raise NearError(
            f"NeAR asset {obj.name!r} has no LH-SLAT file. Re-import its image (File > Import > Image as "
            "NeAR Asset) or set the file in Object Properties > NeAR."
        )
    return Path(bpy.path.abspath(rel, library=obj.library))


def collect_assets(depsgraph: Any) -> list[SceneAsset]:
    """Every visible NeAR asset instance of the evaluated scene (instances and linked duplicates
    included), with its world matrix at the current frame."""
    assets = []
    for inst in depsgraph.object_instances:
        obj = inst.instance_object if inst.is_instance else inst.object
        original = obj.original if hasattr(obj, "original") else obj
        props = getattr(original, "near_asset", None)
        if props is None or not props.is_asset:
            continue
        path = sidecar_abspath(original)
        if not path.is_file():
            raise NearError(
                f"The LH-SLAT file of NeAR asset {original.name!r} is missing: {path}. Move it back next "
                "to the .blend (or fix the path in Object Properties > NeAR), or re-import the image."
            )
        M = np.array(inst.matrix_world, dtype=np.float64).reshape(4, 4)
        assets.append(SceneAsset(original.name, path, M))
    return assets


def sidecar_key(path: Path) -> tuple[str, int, int]:
    """Cache key of a sidecar: path + modification time + size (an edited file is reloaded)."""
    st = os.stat(path)
    return (str(path), st.st_mtime_ns, st.st_size)
