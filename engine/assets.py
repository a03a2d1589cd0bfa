"""NeAR assets in a Blender scene: which objects they are, where they are, and their LH-SLATs.

A NeAR asset is any object with ``near_asset.is_asset`` set. Its transform places the canonical
asset box [-0.5, 0.5]^3 (Z up) in the world; its LH-SLAT lives in a sidecar ``.npz`` next to the
.blend (``near_asset.sidecar``, usually relative: ``//name.near.npz``).

A sidecar can be packed into the .blend (to send one self-contained file to a farm or a colleague):
its bytes then live, base64-encoded, in a Text datablock (``near_asset.packed``, named
``.near-lhslat-<file name>``) and are used instead of the file; unpacking writes the file back.
"""

from __future__ import annotations

import base64
import os
import zlib
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
    packed: bytes | None = None  # the sidecar's bytes when packed into the .blend (used instead)


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
        packed = packed_bytes(original)
        if packed is None and not path.is_file():
            raise NearError(
                f"The LH-SLAT file of NeAR asset {original.name!r} is missing: {path}. Move it back next "
                "to the .blend (or fix the path in Object Properties > NeAR), or re-import the image."
            )
        M = np.array(inst.matrix_world, dtype=np.float64).reshape(4, 4)
        assets.append(SceneAsset(original.name, path, M, packed))
    return assets


def sidecar_key(asset: SceneAsset) -> tuple:
    """Cache key of a sidecar: path + modification time + size (an edited file is reloaded), or the
    packed bytes' length and CRC."""
    if asset.packed is not None:
        return ("packed", str(asset.sidecar), len(asset.packed), zlib.crc32(asset.packed))
    st = os.stat(asset.sidecar)
    return (str(asset.sidecar), st.st_mtime_ns, st.st_size)


# -- packing ----------------------------------------------------------------------------------------
PACKED_PREFIX = ".near-lhslat-"
_PACKED_HEADER = "# NeAR LH-SLAT packed into this .blend (base64 of the .npz). Do not edit.\n"


def packed_bytes(obj: Any) -> bytes | None:
    """The packed sidecar bytes of a NeAR asset object, or None when it uses its file."""
    text = obj.near_asset.packed
    if text is None:
        return None
    body = text.as_string()
    if body.startswith(_PACKED_HEADER):
        body = body[len(_PACKED_HEADER) :]
    try:
        return base64.b64decode(body, validate=False)
    except ValueError as e:
        raise NearError(
            f"The packed LH-SLAT of NeAR asset {obj.name!r} (text {text.name!r}) is damaged ({e}); "
            "unlink it in Object Properties > NeAR and use the sidecar file, or re-import the image."
        ) from None


def pack_sidecar(obj: Any) -> Any:
    """Pack an asset's sidecar file into the .blend (a Text datablock shared by every asset that
    uses the same file); validates the file first. Returns the Text."""
    import bpy

    from near_blender.data.slat_io import load_slat_npz

    path = sidecar_abspath(obj)
    if not path.is_file():
        raise NearError(f"Cannot pack the LH-SLAT of {obj.name!r}: {path} does not exist.")
    data = path.read_bytes()
    load_slat_npz(path, data=data)  # never pack a damaged file
    body = _PACKED_HEADER + base64.encodebytes(data).decode("ascii")
    text = bpy.data.texts.get(PACKED_PREFIX + path.name)
    if text is None or text.as_string() != body:
        text = bpy.data.texts.new(PACKED_PREFIX + path.name)  # name taken by other bytes: ".001"
        text.from_string(body)
    obj.near_asset.packed = text
    return text


def unpack_sidecar(obj: Any) -> Path:
    """Write an asset's packed LH-SLAT back to its sidecar path (atomically) and use the file again.
    When the file already exists with the same bytes it is kept; a different file there is an error
    (nothing is overwritten). The Text is removed when no other asset uses it."""
    import bpy

    from near_blender.utils.atomic import atomic_write_bytes

    data = packed_bytes(obj)
    if data is None:
        raise NearError(f"The LH-SLAT of {obj.name!r} is not packed.")
    path = sidecar_abspath(obj)
    if path.exists():
        if path.read_bytes() != data:
            raise NearError(
                f"Cannot unpack the LH-SLAT of {obj.name!r}: {path} exists and differs from the packed "
                "copy. Move that file away (or set another LH-SLAT path), then unpack again."
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    text = obj.near_asset.packed
    obj.near_asset.packed = None
    if text is not None and not any(o.near_asset.packed == text for o in bpy.data.objects):
        bpy.data.texts.remove(text)
    return path
