"""Assets in Blender: the procedural library, file import, copies of scene objects, normalization.

Every asset ends up as objects in the asset scene, parented to one root empty whose transform
normalizes the asset (TRELLIS's rule): uniform scale so that the largest side of the world-space
bounding box of the evaluated geometry is 1, then a translation that centres the box at the
origin, so the asset fills [-0.5, 0.5]^3 (Z up, as Blender's importers deliver it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import bmesh
import bpy
import numpy as np
from mathutils import Matrix

from near_blender import NearError
from near_blender.data.voxelize import canonical_transform

from .materials import socket

GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}
DROP_TYPES = {"CAMERA", "LIGHT", "LIGHT_PROBE", "SPEAKER"}  # imported scene dressing we replace

# ---------------------------------------------------------------------------------------------
# Procedural library
# ---------------------------------------------------------------------------------------------


def _torus(bm: Any, major: float = 0.35, minor: float = 0.15, n_major: int = 48, n_minor: int = 24) -> None:
    verts = []
    for i in range(n_major):
        a = 2 * math.pi * i / n_major
        for j in range(n_minor):
            b = 2 * math.pi * j / n_minor
            r = major + minor * math.cos(b)
            verts.append(bm.verts.new((r * math.cos(a), r * math.sin(a), minor * math.sin(b))))
    for i in range(n_major):
        for j in range(n_minor):
            i1, j1 = (i + 1) % n_major, (j + 1) % n_minor
            bm.faces.new(
                (
                    verts[i * n_minor + j],
                    verts[i1 * n_minor + j],
                    verts[i1 * n_minor + j1],
                    verts[i * n_minor + j1],
                )
            )


def _shape_mesh(shape: str, name: str) -> tuple[Any, int]:
    """(mesh, subdivision levels) of a library shape, about unit size, centred at the origin."""
    bm = bmesh.new()
    subdiv = 0
    if shape in ("cube", "bevel_cube", "subdiv_cube"):
        bmesh.ops.create_cube(bm, size=1.0)
        if shape == "bevel_cube":
            bmesh.ops.bevel(bm, geom=list(bm.edges) + list(bm.verts), offset=0.12, segments=4, affect="EDGES",
                            profile=0.5)  # fmt: skip
        if shape == "subdiv_cube":
            subdiv = 3
    elif shape == "uv_sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=48, v_segments=24, radius=0.5)
    elif shape == "ico_sphere":
        bmesh.ops.create_icosphere(bm, subdivisions=3, radius=0.5)
    elif shape in ("cylinder", "cone"):
        bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=48, radius1=0.5,
                              radius2=0.5 if shape == "cylinder" else 0.0, depth=1.0)  # fmt: skip
    elif shape == "torus":
        _torus(bm)
    elif shape in ("suzanne", "subdiv_suzanne"):
        bmesh.ops.create_monkey(bm)
        subdiv = 2 if shape == "subdiv_suzanne" else 0
    else:
        raise NearError(f"Unknown procedural shape {shape!r}.")
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh, subdiv


def _procedural_material(spec: dict[str, Any], name: str) -> Any:
    mat = bpy.data.materials.new(name)
    nt = mat.node_tree
    bsdf = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = (*spec["base_color"], 1.0)
    bsdf.inputs["Roughness"].default_value = float(spec["roughness"])
    bsdf.inputs["Metallic"].default_value = float(spec["metallic"])
    bsdf.inputs["Specular IOR Level"].default_value = float(spec.get("specular", 0.5))
    tex = spec.get("texture")
    if tex:
        coord = nt.nodes.new("ShaderNodeTexCoord")
        kind = {"noise": "ShaderNodeTexNoise", "checker": "ShaderNodeTexChecker",
                "voronoi": "ShaderNodeTexVoronoi", "wave": "ShaderNodeTexWave"}[tex["type"]]  # fmt: skip
        t = nt.nodes.new(kind)
        t.inputs["Scale"].default_value = float(tex["scale"])
        nt.links.new(coord.outputs["Object"], t.inputs["Vector"])
        fac = t.outputs["Distance"] if tex["type"] == "voronoi" else t.outputs["Factor"]
        mix = nt.nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        nt.links.new(fac, socket(mix.inputs, "Factor_Float"))
        socket(mix.inputs, "A_Color").default_value = (*spec["base_color"], 1.0)
        socket(mix.inputs, "B_Color").default_value = (*tex["color2"], 1.0)
        nt.links.new(socket(mix.outputs, "Result_Color"), bsdf.inputs["Base Color"])
        if tex.get("roughness2") is not None:
            mr = nt.nodes.new("ShaderNodeMix")
            mr.data_type = "FLOAT"
            nt.links.new(fac, socket(mr.inputs, "Factor_Float"))
            socket(mr.inputs, "A_Float").default_value = float(spec["roughness"])
            socket(mr.inputs, "B_Float").default_value = float(tex["roughness2"])
            nt.links.new(socket(mr.outputs, "Result_Float"), bsdf.inputs["Roughness"])
    return mat


def build_procedural(spec: dict[str, Any], scene: Any, name: str) -> list[Any]:
    """Create a library asset (spec of :mod:`near_blender.data.procedural`) in ``scene``."""
    mesh, subdiv = _shape_mesh(spec["shape"], name)
    smooth = bool(spec.get("smooth", True))
    mesh.polygons.foreach_set("use_smooth", [smooth] * len(mesh.polygons))
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    if subdiv:
        mod = obj.modifiers.new("Subdivision", "SUBSURF")
        mod.levels = mod.render_levels = subdiv
    obj.scale = tuple(float(v) for v in spec.get("dims", (1.0, 1.0, 1.0)))
    obj.rotation_euler = (0.0, 0.0, math.radians(float(spec.get("rotation_z_deg", 0.0))))
    obj.data.materials.append(_procedural_material(spec["material"], f"{name}-material"))
    return [obj]


# ---------------------------------------------------------------------------------------------
# Files and scene objects
# ---------------------------------------------------------------------------------------------


def import_file(path: str, scene: Any) -> list[Any]:
    """Import an asset file into ``scene`` (the context scene: importers use the context).

    Returns the imported objects minus cameras and lights. Raises :class:`NearError` with the
    importer's message when the file cannot be read.
    """
    p = Path(path)
    ext = p.suffix.lower()
    before = set(bpy.data.objects)
    try:
        if ext == ".blend":
            _append_blend(p, scene)
        elif ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=str(p))
        elif ext == ".obj":
            bpy.ops.wm.obj_import(filepath=str(p))
        elif ext == ".fbx":
            bpy.ops.import_scene.fbx(filepath=str(p))
        elif ext == ".ply":
            bpy.ops.wm.ply_import(filepath=str(p))
        else:
            raise NearError(f"{p.name}: unsupported format {ext}.")
    except NearError:
        raise
    except (RuntimeError, OSError, ValueError) as e:
        msg = " ".join(str(e).replace("Error:", "").split())
        raise NearError(
            f"{p.name}: Blender cannot import this file ({msg}). Is it complete and of that format?"
        ) from None
    new = [o for o in bpy.data.objects if o not in before]
    for o in [o for o in new if o.type in DROP_TYPES]:
        bpy.data.objects.remove(o, do_unlink=True)
    return [o for o in bpy.data.objects if o not in before]


def _append_blend(path: Path, scene: Any) -> None:
    with bpy.data.libraries.load(str(path), link=False) as (src, dst):
        dst.objects = list(src.objects)
    for obj in dst.objects:
        if obj is None or obj.type in DROP_TYPES or obj.hide_render:
            continue
        scene.collection.objects.link(obj)


def copy_objects(names: list[str], scene: Any) -> list[Any]:
    """Copies (sharing mesh data, with copied materials) of scene objects, linked into ``scene``.

    Used by the UI operator so that the artist's objects and materials are never modified.
    """
    out = []
    mapping: dict[str, Any] = {}
    for name in names:
        src = bpy.data.objects.get(name)
        if src is None:
            raise NearError(f"Object {name!r} no longer exists.")
        dup = src.copy()
        mapping[src.name] = dup
        scene.collection.objects.link(dup)
        for slot in dup.material_slots:
            mat = slot.material
            if mat is not None:
                if slot.link == "DATA":  # the mesh is shared with the original: override per object
                    slot.link = "OBJECT"
                slot.material = mat.copy()
        out.append(dup)
    for dup in out:  # keep parenting inside the copied set, world transforms unchanged
        if dup.parent is not None:
            mw = dup.matrix_world.copy()
            dup.parent = mapping.get(dup.parent.name)
            dup.matrix_world = mw
    return out


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def evaluated_triangles(scene: Any, objects: list[Any] | None = None) -> np.ndarray:
    """World-space triangles ``[F, 3, 3]`` of the evaluated geometry of ``scene`` (modifiers and
    instances included); ``objects`` restricts to those objects (and what they instance)."""
    view_layer = scene.view_layers[0]
    view_layer.update()
    depsgraph = view_layer.depsgraph
    allowed = None if objects is None else {o.name for o in objects}
    chunks = []
    for inst in depsgraph.object_instances:
        ob = inst.object
        owner = inst.parent if inst.is_instance and inst.parent is not None else ob
        if ob.type not in GEOMETRY_TYPES or (allowed is not None and owner.original.name not in allowed):
            continue
        mesh = ob.to_mesh()
        try:
            if mesh is None or len(mesh.polygons) == 0:
                continue
            mesh.calc_loop_triangles()
            n_v, n_t = len(mesh.vertices), len(mesh.loop_triangles)
            co = np.empty(n_v * 3, dtype=np.float64)
            mesh.vertices.foreach_get("co", co)
            idx = np.empty(n_t * 3, dtype=np.int64)
            mesh.loop_triangles.foreach_get("vertices", idx)
            M = np.array(inst.matrix_world, dtype=np.float64)
            world = co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]
            chunks.append(world[idx.reshape(-1, 3)])
        finally:
            ob.to_mesh_clear()
    if not chunks:
        return np.zeros((0, 3, 3))
    return np.concatenate(chunks)


def describe(objects: list[Any]) -> str:
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o.type] = kinds.get(o.type, 0) + 1
    return ", ".join(f"{n} {k.lower()}" for k, n in sorted(kinds.items())) or "nothing"


def normalize(objects: list[Any], scene: Any, label: str) -> tuple[dict[str, Any], np.ndarray]:
    """Parent ``objects`` to a root empty that maps them into [-0.5, 0.5]^3.

    Returns (the normalization record for ``asset.json``, the normalized triangles [F, 3, 3]).
    Raises :class:`NearError` when there is no geometry with faces.
    """
    tris = evaluated_triangles(scene, objects)
    if len(tris) == 0:
        raise NearError(
            f"{label}: no mesh with faces to render (found: {describe(objects)}). An asset needs at "
            "least one mesh, curve or text object with faces."
        )
    lo, hi = tris.reshape(-1, 3).min(axis=0), tris.reshape(-1, 3).max(axis=0)
    try:
        M = canonical_transform(tris)
    except NearError as e:
        raise NearError(f"{label}: {e}") from None
    s, t = float(M[0, 0]), M[:3, 3]
    root = bpy.data.objects.new("NeAR Asset Root", None)
    scene.collection.objects.link(root)
    members = {o.name for o in objects}
    for o in objects:
        if o.parent is None or o.parent.name not in members:
            mw = o.matrix_world.copy()
            o.parent = root
            o.matrix_parent_inverse = Matrix.Identity(4)
            o.matrix_world = mw
    root.matrix_world = Matrix(M.tolist())
    tris_n = tris * s + t
    record = {
        "rule": "world = scale * source + translation (largest bbox side -> 1, bbox centred)",
        "scale": s,
        "translation": t.tolist(),
        "matrix": M.tolist(),
        "source_bbox": [lo.tolist(), hi.tolist()],
    }
    return record, tris_n
