"""Object > NeAR > Bake PBR to Mesh: a NeAR asset's base colour, roughness and metallic baked into
image textures of its geometry prior, with a Principled BSDF material that uses them, so that the
mesh renders in EEVEE / Cycles and exports with Blender's glTF exporter (:mod:`near_blender.export.bake`).

Select the mesh and its NeAR asset. Main thread: the mesh's UVs (Smart UV Project on a copy of its
data, or its active UV map when *Keep UVs* is ticked and it has one), its evaluated triangles in the
world with their UVs, the asset, the scene camera and world. Worker: decoding and sampling (torch).
Main thread again (``finish``): the three images (packed into the .blend), the material, and the
unwrapped copy becomes the mesh's data. A cancel or an error leaves the scene as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
from bpy.props import BoolProperty, IntProperty

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment

from ..engine.assets import SceneAsset
from .export_ply import asset_of, placed_asset, view_and_world
from .worker_modal import WorkerModal

UV_MAP = "NeAR Bake"


@dataclass(frozen=True)
class BakeJob:
    """What the worker needs, read on the main thread: the asset, the mesh's world triangles
    ``pos_tris [F, 3, 3]`` and their ``uv_tris [F, 3, 2]``, the texture ``size``, the view and world
    the Gaussians are decoded for, the model."""

    asset: SceneAsset
    pos_tris: np.ndarray
    uv_tris: np.ndarray
    size: int
    camera: Camera
    env: Environment
    model: Any  # engine.model_manager.ModelSpec
    precision: str


def bake_objects(context: Any) -> tuple[Any, Any]:
    """(the NeAR asset, the mesh) among the selected objects (the active one counts as selected)."""
    chosen = {o.name: o for o in (*context.selected_objects, context.active_object) if o is not None}
    assets = [o for o in chosen.values() if o.near_asset.is_asset]
    meshes = [o for o in chosen.values() if o.type == "MESH" and not o.near_asset.is_asset]
    hint = "Select the mesh to bake onto (e.g. the geometry prior) and its NeAR asset."
    if len(assets) != 1:
        raise NearError(
            f"{'No' if not assets else 'More than one'} NeAR asset is selected (one has the LH-SLAT). {hint}"
        )
    if len(meshes) != 1:
        raise NearError(f"{'No' if not meshes else 'More than one'} mesh is selected. {hint}")
    if len(meshes[0].data.polygons) == 0:
        raise NearError(f"Mesh {meshes[0].name!r} has no faces to bake onto. {hint}")
    return assets[0], meshes[0]


def smart_unwrap(context: Any, obj: Any) -> None:
    """Smart UV Project of ``obj``'s whole mesh into a new UV map ``UV_MAP`` (made active)."""
    mesh = obj.data
    uv = mesh.uv_layers.get(UV_MAP) or mesh.uv_layers.new(name=UV_MAP)
    mesh.uv_layers.active = uv
    with context.temp_override(
        active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj]
    ):
        bpy.ops.object.mode_set(mode="EDIT")
        bpy.ops.mesh.select_all(action="SELECT")
        bpy.ops.uv.smart_project(angle_limit=math.radians(66.0), island_margin=0.01, area_weight=0.0)
        bpy.ops.object.mode_set(mode="OBJECT")


def uv_triangles(context: Any, obj: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(pos_tris [F, 3, 3] world, uv_tris [F, 3, 2])`` of the evaluated mesh (modifiers applied),
    with its active UV map."""
    ev = obj.evaluated_get(context.evaluated_depsgraph_get())
    mesh = ev.to_mesh()
    try:
        if not mesh.uv_layers:
            raise NearError(f"Mesh {obj.name!r} has no UV map after its modifiers; untick Keep UVs.")
        mesh.calc_loop_triangles()
        n_v, n_t, n_l = len(mesh.vertices), len(mesh.loop_triangles), len(mesh.loops)
        co = np.empty(n_v * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        loops = np.empty(n_t * 3, np.int64)
        mesh.loop_triangles.foreach_get("loops", loops)
        verts = np.empty(n_t * 3, np.int64)
        mesh.loop_triangles.foreach_get("vertices", verts)
        uv = np.empty(n_l * 2, np.float32)
        mesh.uv_layers.active.data.foreach_get("uv", uv)
    finally:
        ev.to_mesh_clear()
    M = np.array(obj.matrix_world, dtype=np.float64)
    world = co.reshape(-1, 3).astype(np.float64) @ M[:3, :3].T + M[:3, 3]
    return world[verts].reshape(-1, 3, 3), uv.reshape(-1, 2)[loops].reshape(-1, 3, 2).astype(np.float64)


def bake_on_worker(job: BakeJob, progress: Any, cancel: Any) -> Any:
    """The bake (reads nothing of Blender): a :class:`near_blender.export.bake.PBRTextures`."""
    from near_blender.export.bake import bake_pbr

    with placed_asset(job.asset, job.model, progress) as (renderer, placed):
        return bake_pbr(renderer, placed, job.uv_tris, job.pos_tris, job.size, job.camera, job.env, job.precision,
                        progress, cancel)  # fmt: skip


def image_from(name: str, pixels: np.ndarray, color: bool) -> Any:
    """A packed 8-bit image of ``pixels [S, S, 3 or 1]`` (linear, row 0 at the bottom); colour images
    are stored sRGB-encoded, data images (roughness, metallic) as Non-Color."""
    from near_blender.render.color import linear_to_srgb

    S = pixels.shape[0]
    img = bpy.data.images.new(name, S, S, alpha=False)
    img.colorspace_settings.name = "sRGB" if color else "Non-Color"
    rgb = linear_to_srgb(pixels) if color else np.repeat(pixels, 3, axis=-1)
    rgba = np.concatenate([rgb, np.ones((S, S, 1), np.float32)], -1).astype(np.float32)
    img.pixels.foreach_set(rgba.ravel())
    img.file_format = "PNG"
    img.pack()
    return img


def pbr_material(name: str, base: Any, rough: Any, metal: Any) -> Any:
    """A Principled BSDF material whose Base Color, Roughness and Metallic read the three images."""
    mat = bpy.data.materials.new(name)
    nt = mat.node_tree
    bsdf = next(n for n in nt.nodes if n.type == "BSDF_PRINCIPLED")
    for i, (img, socket) in enumerate(((base, "Base Color"), (rough, "Roughness"), (metal, "Metallic"))):
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image, tex.location = img, (-420, 300 - 280 * i)
        nt.links.new(tex.outputs["Color"], bsdf.inputs[socket])
    return mat


class NEAR_OT_bake_pbr(bpy.types.Operator, WorkerModal):
    """Bake the selected NeAR asset's base colour, roughness and metallic into textures of the
    selected mesh, with a Principled BSDF material (renders in EEVEE / Cycles, exports to glTF)"""

    bl_idname = "near.bake_pbr"
    bl_label = "Bake PBR to Mesh"
    bl_options = {"REGISTER", "UNDO"}
    work_label = "NeAR bake"

    size: IntProperty(  # type: ignore[valid-type]
        name="Texture Size", default=1024, min=16, max=8192, soft_min=256, soft_max=4096, subtype="PIXEL",
        description="Width and height of the three textures in texels",
    )  # fmt: skip
    keep_uvs: BoolProperty(  # type: ignore[valid-type]
        name="Keep UVs", default=False,
        description="Bake into the mesh's active UV map instead of a new Smart UV Project",
    )  # fmt: skip

    _new_mesh: str | None = None  # the unwrapped copy of the mesh data, until finish or abort

    def invoke(self, context: Any, event: Any) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context: Any) -> set[str]:
        self._new_mesh = None
        try:
            asset_obj, mesh_obj = bake_objects(context)
            asset = asset_of(context, asset_obj)
            camera, env, model, precision = view_and_world(context, asset)
            if mesh_obj.mode != "OBJECT":
                raise NearError(
                    f"Mesh {mesh_obj.name!r} is in {mesh_obj.mode.title()} Mode; switch to Object Mode."
                )
            if self.keep_uvs and mesh_obj.data.uv_layers:
                pos, uv = uv_triangles(context, mesh_obj)
            else:
                original = mesh_obj.data
                copy = original.copy()
                self._new_mesh = copy.name
                mesh_obj.data = copy
                try:
                    smart_unwrap(context, mesh_obj)
                    pos, uv = uv_triangles(context, mesh_obj)
                finally:
                    mesh_obj.data = original  # the scene stays as it was until the bake succeeds
            job = BakeJob(asset, pos, uv, self.size, camera, env, model, precision)
        except NearError as e:
            self.abort(context)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self._target = mesh_obj.name
        return self.run_job(context, job, bake_on_worker)

    def abort(self, context: Any) -> None:
        mesh = bpy.data.meshes.get(self._new_mesh) if self._new_mesh else None
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
        self._new_mesh = None

    def finish(self, context: Any, result: Any) -> None:
        obj = bpy.data.objects[self._target]
        name = obj.name
        base = image_from(f"{name} base color", result.base_color, color=True)
        rough = image_from(f"{name} roughness", result.roughness[..., None], color=False)
        metal = image_from(f"{name} metallic", result.metallic[..., None], color=False)
        mat = pbr_material(f"{name} NeAR PBR", base, rough, metal)
        if self._new_mesh:
            obj.data = bpy.data.meshes[self._new_mesh]
            self._new_mesh = None
        obj.data.materials.clear()
        obj.data.materials.append(mat)
        obj.hide_render = False
        st = result.stats
        self.report({"INFO"}, f"Baked {st['texels']} texels ({100 * st['texels_reached'] / max(st['texels'], 1):.0f}% "
                    f"reached by the asset's Gaussians) into {result.base_color.shape[0]}² textures in "
                    f"{st['total_s']:.1f} s; material {mat.name!r}")  # fmt: skip


classes = (NEAR_OT_bake_pbr,)
