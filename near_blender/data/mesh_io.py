"""Mesh files (.obj .ply .stl .glb .gltf) as triangles in Blender's Z-up world frame, bpy-free.

Files are read with trimesh (``process=False``: vertices exactly as stored; materials and textures
are skipped, only the shape is used). A file holding several meshes or scene nodes gives all of its
surface geometry, each piece moved by its node transform, concatenated; points and lines are
dropped. Y-up files are turned Z-up with the rotation that Blender's OBJ (forward -Z, up Y) and
glTF importers apply, ``(x, y, z) -> (x, -z, y)``, so by default a file gives the same world-space
triangles as importing it into Blender 5.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import NearError

# The up axis Blender 5.0's importer assumes for each format (its default import settings): OBJ
# (forward -Z, up Y) and glTF (Y-up by the spec) are converted, PLY and STL (up Z) are not.
BLENDER_UP: dict[str, str] = {".obj": "y", ".gltf": "y", ".glb": "y", ".ply": "z", ".stl": "z"}
MESH_EXTENSIONS: tuple[str, ...] = tuple(BLENDER_UP)

# [3, 3] rotation from a Y-up file frame to Blender's Z-up world: (x, y, z) -> (x, -z, y)
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def default_up(path: str | Path) -> str:
    """``"y"`` or ``"z"``: the up axis Blender's importer assumes for the format of ``path``."""
    ext = Path(path).suffix.lower()
    if ext not in BLENDER_UP:
        raise NearError(
            f"{Path(path).name}: unsupported mesh format {ext or '(no extension)'!r}; use one of "
            f"{', '.join(MESH_EXTENSIONS)} (e.g. import it into Blender and export it as glTF)."
        )
    return BLENDER_UP[ext]


def read_mesh_triangles(path: str | Path, up: str | None = None) -> np.ndarray:
    """All surface triangles ``[F, 3, 3]`` float64 of a mesh file, in Blender's Z-up world frame
    (file units, node transforms applied; polygons triangulated by trimesh).

    ``up``: the file's up axis, ``"z"`` (kept) or ``"y"`` (rotated Z-up); ``None`` = what Blender's
    importer assumes for the format (:data:`BLENDER_UP`). Raises :class:`NearError` for a missing,
    unsupported, unreadable or face-less file.
    """
    p = Path(path)
    if not p.is_file():
        raise NearError(f"Mesh file not found: {p}; check the path.")
    up = default_up(p) if up is None else up
    if up not in ("y", "z"):
        raise NearError(f"Up axis must be 'y' or 'z', got {up!r}.")
    import trimesh

    try:
        scene = trimesh.load_scene(p, file_type=p.suffix.lower()[1:], process=False, skip_materials=True)
        parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file, reported in one line
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise NearError(
            f"Cannot read the mesh file {p.name} ({detail}); it is corrupt or incomplete: export it again."
        ) from None
    if not parts:
        raise NearError(
            f"{p.name} has no faces (only points or lines, or nothing); a geometry prior must be a surface "
            "mesh: export the object with its faces."
        )
    tris = np.concatenate([np.asarray(g.vertices, np.float64)[np.asarray(g.faces)] for g in parts])
    return tris @ Y_UP_TO_Z_UP.T if up == "y" else tris
