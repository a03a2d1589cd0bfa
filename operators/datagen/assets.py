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


def _boolean_difference(mesh: Any, cutters: list[Any], scene: Any) -> Any:
    """``mesh`` minus each of ``cutters`` in turn (Blender's exact boolean); a new mesh."""
    base = bpy.data.objects.new("near-boolean-base", mesh)
    scene.collection.objects.link(base)
    tools = []
    for i, cutter in enumerate(cutters):
        tool = bpy.data.objects.new(f"near-boolean-cutter-{i}", cutter)
        scene.collection.objects.link(tool)
        mod = base.modifiers.new(f"cut{i}", "BOOLEAN")
        mod.operation, mod.solver, mod.object = "DIFFERENCE", "EXACT", tool
        tools.append(tool)
    depsgraph = scene.view_layers[0].depsgraph
    depsgraph.update()
    result = bpy.data.meshes.new_from_object(base.evaluated_get(depsgraph))
    for ob in [base, *tools]:
        data = ob.data
        bpy.data.objects.remove(ob, do_unlink=True)
        bpy.data.meshes.remove(data)
    return result


def _bm_mesh(build: Any, name: str) -> Any:
    """A new mesh made by ``build(bm)``."""
    bm = bmesh.new()
    build(bm)
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _cylinder(bm: Any, radius: float, depth: float, axis: str = "Z", radius2: float | None = None) -> None:
    rot = {
        "Z": Matrix.Identity(4),
        "X": Matrix.Rotation(math.pi / 2, 4, "Y"),
        "Y": Matrix.Rotation(math.pi / 2, 4, "X"),
    }
    bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=48, radius1=radius,
                          radius2=radius if radius2 is None else radius2, depth=depth, matrix=rot[axis])  # fmt: skip


def _bumps(co: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    """Radial displacement of unit-sphere points ``co`` [N, 3]: a sum of 4 seeded plane waves."""
    rng = np.random.default_rng(int(d.get("seed", 0)))
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * math.pi, 4)
    waves = np.sin(float(d.get("frequency", 3.0)) * 2 * math.pi * co @ dirs.T + phase).sum(axis=1) / 2.0
    return float(d.get("amplitude", 0.06)) * waves


def _shape_mesh(
    shape: str, name: str, spec: dict[str, Any] | None = None, scene: Any = None
) -> tuple[Any, int]:
    """(mesh, subdivision levels) of a library shape, about unit size, centred at the origin.

    ``spec`` carries the v2 shapes' parameters (``displace``, ``twist_deg``); ``scene`` is where
    the boolean shapes are evaluated (temporary objects, removed again)."""
    spec = spec or {}
    bm = bmesh.new()
    subdiv = 0
    if shape in ("tube", "holed_cube", "l_block"):
        bm.free()
        if shape == "tube":
            outer = _bm_mesh(lambda b: _cylinder(b, 0.5, 1.0), name)
            cutters = [_bm_mesh(lambda b: _cylinder(b, 0.36, 1.2), f"{name}-cut")]
        elif shape == "holed_cube":
            outer = _bm_mesh(lambda b: bmesh.ops.create_cube(b, size=1.0), name)
            cutters = [_bm_mesh(lambda b, a=a: _cylinder(b, 0.28, 1.4, a), f"{name}-cut{a}") for a in "XYZ"]
        else:
            outer = _bm_mesh(lambda b: bmesh.ops.create_cube(b, size=1.0), name)
            corner = Matrix.Translation((0.3, 0.3, 0.0)) @ Matrix.Diagonal((0.6, 0.6, 1.2, 1.0))
            cutters = [_bm_mesh(lambda b: bmesh.ops.create_cube(b, size=1.0, matrix=corner), f"{name}-cut")]
        if scene is None:
            raise NearError(f"The {shape} shape needs a scene to evaluate its boolean in.")
        mesh = _boolean_difference(outer, cutters, scene)
        mesh.name = name
        return mesh, 0
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
    elif shape == "ring":  # a thin part
        _torus(bm, major=0.42, minor=0.06, n_major=64, n_minor=16)
    elif shape in ("suzanne", "subdiv_suzanne"):
        bmesh.ops.create_monkey(bm)
        subdiv = 2 if shape == "subdiv_suzanne" else 0
    elif shape == "plate":  # a thin slab
        bmesh.ops.create_cube(bm, size=1.0, matrix=Matrix.Diagonal((1.0, 1.0, 0.08, 1.0)))
    elif shape == "bowl":  # a concave open shell with a wall thickness
        bmesh.ops.create_uvsphere(bm, u_segments=48, v_segments=24, radius=0.5)
        bmesh.ops.delete(bm, geom=[v for v in bm.verts if v.co.z > 0.08], context="VERTS")
        bmesh.ops.solidify(bm, geom=list(bm.faces), thickness=0.05)
    elif shape == "bumpy_sphere":  # displacement
        bmesh.ops.create_icosphere(bm, subdivisions=6, radius=0.5)
        co = np.array([v.co for v in bm.verts], dtype=np.float64) / 0.5
        r = 0.5 + _bumps(co, spec.get("displace") or {})
        for v, p, rad in zip(bm.verts, co, r, strict=True):
            v.co = tuple(p * rad)
    elif shape == "twisted_box":  # a deformed box
        bmesh.ops.create_cube(bm, size=1.0, matrix=Matrix.Diagonal((0.6, 0.6, 1.0, 1.0)))
        bmesh.ops.subdivide_edges(bm, edges=list(bm.edges), cuts=12, use_grid_fill=True)
        twist = math.radians(float(spec.get("twist_deg", 60.0)))
        for v in bm.verts:
            a = twist * v.co.z
            x, y = v.co.x, v.co.y
            v.co.x, v.co.y = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
    elif shape == "stack":  # a base with a ball on top (overlapping parts of one mesh)
        _cylinder(bm, 0.45, 0.5)
        bmesh.ops.translate(bm, verts=list(bm.verts), vec=(0.0, 0.0, -0.25))
        bmesh.ops.create_uvsphere(bm, u_segments=48, v_segments=24, radius=0.3,
                                  matrix=Matrix.Translation((0.0, 0.0, 0.25)))  # fmt: skip
    else:
        bm.free()
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
        fac = _texture_factor(nt, tex)
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


TEXTURE_NODES = {"noise": "ShaderNodeTexNoise", "checker": "ShaderNodeTexChecker", "voronoi": "ShaderNodeTexVoronoi",
                 "wave": "ShaderNodeTexWave", "brick": "ShaderNodeTexBrick", "magic": "ShaderNodeTexMagic"}  # fmt: skip
BRICK_MORTAR = 0.08  # mortar width, in bricks' units (Blender's default 0.02 is a hairline at 64 px)


def _texture_factor(nt: Any, tex: dict[str, Any]) -> Any:
    """The output socket (a 0..1 factor on object coordinates) of a library texture."""
    coord = nt.nodes.new("ShaderNodeTexCoord").outputs["Object"]
    kind = tex["type"]
    if kind in TEXTURE_NODES:
        t = nt.nodes.new(TEXTURE_NODES[kind])
        t.inputs["Scale"].default_value = float(tex["scale"])
        nt.links.new(coord, t.inputs["Vector"])
        if kind == "brick":  # the Color output with black bricks and white mortar: the mortar mask
            # Blender's bricks lie in the XY plane: stand them up (rows along Z, as on a wall) and
            # shift them off the faces of a unit box (a face on a row line would be all mortar).
            wall = nt.nodes.new("ShaderNodeMapping")
            wall.inputs["Rotation"].default_value = (math.pi / 2, 0.0, 0.0)
            wall.inputs["Location"].default_value = (0.37, 0.21, 0.13)
            nt.links.new(coord, wall.inputs["Vector"])
            nt.links.new(wall.outputs["Vector"], t.inputs["Vector"])
            t.inputs["Color1"].default_value = t.inputs["Color2"].default_value = (0.0, 0.0, 0.0, 1.0)
            t.inputs["Mortar"].default_value = (1.0, 1.0, 1.0, 1.0)
            t.inputs["Mortar Size"].default_value = BRICK_MORTAR
            return t.outputs["Color"]
        return t.outputs["Distance"] if kind == "voronoi" else t.outputs["Factor"]
    mapping = nt.nodes.new("ShaderNodeMapping")
    nt.links.new(coord, mapping.inputs["Vector"])
    grad = nt.nodes.new("ShaderNodeTexGradient")
    nt.links.new(mapping.outputs["Vector"], grad.inputs["Vector"])
    if kind == "gradient":  # a ramp along a rotated axis: 0 -> 1 over 4 / scale (object units)
        mapping.inputs["Rotation"].default_value = [
            math.radians(a) for a in tex.get("rotation_deg", (0, 0, 0))
        ]
        mapping.inputs["Scale"].default_value = [float(tex["scale"]) / 4.0] * 3
        mapping.inputs["Location"].default_value = (0.5, 0.5, 0.5)
        return grad.outputs["Factor"]
    if kind == "sticker":  # 1 inside the disc |p - center| < radius, 0 outside
        r = float(tex.get("radius", 0.25))
        c = [float(v) for v in tex.get("center", (0.0, -0.5, 0.0))]
        mapping.inputs["Scale"].default_value = [1.0 / r] * 3
        mapping.inputs["Location"].default_value = [-v / r for v in c]
        grad.gradient_type = "SPHERICAL"  # max(1 - |u|, 0)
        step = nt.nodes.new("ShaderNodeMath")
        step.operation = "GREATER_THAN"
        step.inputs[1].default_value = 1e-4
        nt.links.new(grad.outputs["Factor"], step.inputs[0])
        return step.outputs["Value"]
    raise NearError(f"Unknown procedural texture {kind!r}.")


def build_procedural(spec: dict[str, Any], scene: Any, name: str) -> list[Any]:
    """Create a library asset (spec of :mod:`near_blender.data.procedural`) in ``scene``."""
    mesh, subdiv = _shape_mesh(spec["shape"], name, spec, scene)
    smooth = bool(spec.get("smooth", True))
    mesh.polygons.foreach_set("use_smooth", [smooth] * len(mesh.polygons))
    if smooth and spec.get("sharp_angle_deg"):  # v2: creases above the angle stay sharp
        mesh.set_sharp_from_angle(angle=math.radians(float(spec["sharp_angle_deg"])))
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    if spec.get("bevel"):
        bev = obj.modifiers.new("Bevel", "BEVEL")
        bev.width = float(spec["bevel"]["width"])
        bev.segments = int(spec["bevel"].get("segments", 3))
        bev.limit_method = "ANGLE"
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


def evaluated_triangles(scene: Any, objects: list[Any] | None = None, depsgraph: Any = None) -> np.ndarray:
    """World-space triangles ``[F, 3, 3]`` of the evaluated geometry of ``scene`` (modifiers and
    instances included); ``objects`` restricts to those objects (and what they instance).
    ``depsgraph``: the evaluated view layer to read (default: the scene's first, updated)."""
    if depsgraph is None:
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
