"""File > Export > NeAR Asset as 3D Gaussians (.ply): the active NeAR asset's relit Gaussians as a
standard 3D Gaussian Splatting file (:mod:`near_blender.export`).

Main thread: the asset (its LH-SLAT sidecar or packed bytes, its evaluated ``matrix_world``), the
scene's world as F12 reads it (``world_baker``: exact, or baked by Cycles), the scene camera (the
view the Gaussians are decoded for; a front view when the scene has none), the model and precision.
Worker: the decode and the SH fit (torch) under the render caches' lock, then the atomic write.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from near_blender import NearError
from near_blender.render.camera import Camera
from near_blender.render.envmap import Environment

from ..engine import scene_bridge
from ..engine.assets import SceneAsset, packed_bytes, sidecar_abspath
from .worker_modal import WorkerModal


@dataclass(frozen=True)
class ExportJob:
    """What the worker needs, read on the main thread."""

    asset: SceneAsset
    camera: Camera
    env: Environment
    path: Path
    model: Any  # engine.model_manager.ModelSpec
    precision: str
    sh_degree: int
    colors: str
    pbr: bool


def asset_of(context: Any, obj: Any) -> SceneAsset:
    """``obj`` as a :class:`SceneAsset` (its evaluated world matrix); a clear error when it is no
    NeAR asset or its LH-SLAT is missing."""
    import numpy as np

    if obj is None or not obj.near_asset.is_asset:
        what = (
            "No object is active" if obj is None else f"{obj.name!r} is not a NeAR asset (it has no LH-SLAT)"
        )
        raise NearError(f"{what}. Select a NeAR asset (an object made by Image as NeAR Asset).")
    path, packed = sidecar_abspath(obj), packed_bytes(obj)
    if packed is None and not path.is_file():
        raise NearError(
            f"The LH-SLAT file of NeAR asset {obj.name!r} is missing: {path}. Fix the path in Object Properties "
            "> NeAR, or re-import the image."
        )
    M = np.array(obj.evaluated_get(context.evaluated_depsgraph_get()).matrix_world, dtype=np.float64)
    return SceneAsset(obj.name, path, M, packed)


def view_and_world(context: Any, asset: SceneAsset) -> tuple[Camera, Environment, Any, str]:
    """``(camera, environment, model spec, precision)`` the asset's Gaussians are decoded with: the
    scene camera (a front view of the asset without one), the World as F12 reads it (baked by Cycles
    when NeAR cannot read it exactly), the model and precision of the preferences."""
    from near_blender.export.splats import default_camera

    from ..engine.model_manager import model_spec
    from ..engine.session import RenderOptions, RenderSession
    from ..engine.world_bake import world_baker

    scene = context.scene
    if scene.world is None:
        raise NearError("The scene has no World: give it one (an HDRI) to light the asset.")
    env = world_baker().environment(scene.world, scene.frame_current)
    camera = (
        scene_bridge.scene_camera(scene) if scene.camera is not None else default_camera(asset.matrix_world)
    )
    prefs = RenderSession.preferences()
    return camera, env, model_spec(prefs), RenderOptions.from_scene(scene, prefs).precision


@contextmanager
def placed_asset(asset: SceneAsset, model: Any, progress: Any) -> Iterator[tuple[Any, Any]]:
    """On a worker: ``(scene renderer, PlacedAsset)`` of the loaded model and the asset's LH-SLAT,
    holding the render caches' lock (the model and its caches are F12's and the viewport's too)."""
    from near_blender.scene import PlacedAsset

    from ..engine.model_manager import get_pipeline
    from ..engine.session import render_caches

    caches = render_caches()
    with caches.lock:
        progress(0.0, "loading the model")
        pipe = get_pipeline(model)
        key, coords, feats = caches.sidecar(asset)
        yield caches.scene_renderer(pipe), PlacedAsset(key, coords, feats, asset.matrix_world)


def export_on_worker(job: ExportJob, progress: Any, cancel: Any) -> tuple[Path, int]:
    """Decode, fit and write (reads nothing of Blender): ``(path, number of Gaussians)``."""
    from near_blender.export.ply import write_splat_ply
    from near_blender.export.splats import asset_splats

    with placed_asset(job.asset, job.model, progress) as (renderer, placed):
        cloud = asset_splats(renderer, placed, job.camera, job.env, job.sh_degree, job.colors, job.precision,
                             progress, cancel)  # fmt: skip
    write_splat_ply(job.path, cloud, pbr=job.pbr)
    return job.path, len(cloud)


class NEAR_OT_export_gaussians_ply(bpy.types.Operator, ExportHelper, WorkerModal):
    """Export the active NeAR asset's 3D Gaussians, relit by the scene's world, as a 3D Gaussian
    Splatting .ply"""

    bl_idname = "near.export_gaussians_ply"
    bl_label = "Export NeAR Asset as 3D Gaussians"
    bl_options = {"REGISTER"}
    work_label = "NeAR export"

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})  # type: ignore[valid-type]
    sh_degree: IntProperty(  # type: ignore[valid-type]
        name="SH Degree", default=0, min=0, max=3,
        description="0: the colours seen by the scene camera; 1-3: view-dependent colour fitted from more views",
    )  # fmt: skip
    colors: EnumProperty(  # type: ignore[valid-type]
        name="Colours",
        items=[
            ("linear", "Linear HDR", "NeAR's radiance, scene-linear Rec.709; values above 1 kept"),
            ("agx", "AgX (display)", "Through Blender's AgX view per Gaussian, for viewers of 3DGS captures"),
        ],
        default="linear",
    )
    pbr: BoolProperty(  # type: ignore[valid-type]
        name="PBR Attributes", default=False,
        description="Add base_color_0..2, roughness and metallic to every Gaussian",
    )  # fmt: skip

    def execute(self, context: Any) -> set[str]:
        from near_blender.utils.atomic import check_writable_file

        try:
            path = Path(bpy.path.abspath(self.filepath))
            check_writable_file(path, "Export path")
            asset = asset_of(context, context.active_object)
            camera, env, model, precision = view_and_world(context, asset)
            job = ExportJob(asset, camera, env, path, model, precision, self.sh_degree, self.colors, self.pbr)
        except NearError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return self.run_job(context, job, export_on_worker)

    def finish(self, context: Any, result: Any) -> None:
        path, count = result
        self.report({"INFO"}, f"Exported {count} Gaussians to {path}")


def menu_export(self: Any, context: Any) -> None:
    self.layout.operator(NEAR_OT_export_gaussians_ply.bl_idname, text="NeAR Asset as 3D Gaussians (.ply)")


classes = (NEAR_OT_export_gaussians_ply,)
MENUS = ((bpy.types.TOPBAR_MT_file_export, menu_export),)
