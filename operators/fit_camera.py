"""Object > NeAR > Fit Camera to Image: make the scene camera frame the selected meshes as the
photo frames the object (silhouette fit, :mod:`near_blender.data.camera_fit`).

Main thread: the image's alpha, the selected meshes' evaluated triangles and the scene camera are
read. Worker: the fit (torch). Main thread again: the scene camera (created when the scene has
none) gets the fitted pose and lens, and the render size the photo's aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
from bpy.props import BoolProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from near_blender import NearError
from near_blender.render.camera import Camera, intrinsics_from_fov

from ..engine import scene_bridge
from .import_image import IMAGE_EXTENSIONS, prior_objects, prior_triangles, read_image_rgba
from .worker_modal import WorkerModal

GUESS_FOV = 40.0  # degrees: the field of view of the guesses when the scene has no camera


@dataclass(frozen=True)
class FitJob:
    """What the worker needs (read on the main thread): the photo's ``alpha [H, W]``, the prior's
    world ``triangles [F, 3, 3]``, the ``start`` camera at the photo's size (None: guesses)."""

    alpha: np.ndarray
    triangles: np.ndarray
    start: Camera | None
    fit_focal: bool


def start_camera(scene_camera: Camera | None, width: int, height: int) -> Camera | None:
    """The scene camera at the photo's size: the same pose and horizontal field of view (the
    render size may have another aspect ratio than the photo). None when there is no camera."""
    if scene_camera is None:
        return None
    if scene_camera.model != "pinhole":
        raise NearError(
            "The scene camera is orthographic; set Camera Properties > Lens > Type to Perspective."
        )
    fov_x = 2 * np.degrees(np.arctan(scene_camera.width / (2 * scene_camera.K[0, 0])))
    K = intrinsics_from_fov(float(fov_x), width, height)
    return Camera(scene_camera.viewmat, K, width, height, scene_camera.near, scene_camera.far)


def fit_on_worker(job: FitJob, progress: Any, cancel: Any) -> Any:
    """The fit (reads nothing of Blender): a :class:`near_blender.data.camera_fit.CameraFit`."""
    from near_blender.data.camera_fit import cloud_from_triangles, fit_camera, orbit_guesses

    cloud = cloud_from_triangles(job.triangles)
    H, W = job.alpha.shape
    if job.start is not None:
        starts = [job.start]
    else:
        starts = orbit_guesses(cloud, Camera(np.eye(4), intrinsics_from_fov(GUESS_FOV, W, H), W, H))
    return fit_camera(cloud, job.alpha, starts, fit_focal=job.fit_focal, progress=progress, cancel=cancel)


class NEAR_OT_fit_camera(bpy.types.Operator, ImportHelper, WorkerModal):
    """Fit the scene camera so that the selected meshes are framed as the object in the photo"""

    bl_idname = "near.fit_camera"
    bl_label = "Fit Camera to Image"
    bl_options = {"REGISTER", "UNDO"}
    work_label = "NeAR camera fit"

    filename_ext = ""
    filter_glob: StringProperty(default="*" + ";*".join(IMAGE_EXTENSIONS.split(";")), options={"HIDDEN"})  # type: ignore[valid-type]
    fit_focal: BoolProperty(name="Fit Focal Length", default=False,  # type: ignore[valid-type]
                            description="Also fit the lens (when the photo's focal length is unknown)")  # fmt: skip

    def execute(self, context: Any) -> set[str]:
        try:
            rgba = read_image_rgba(self.filepath)
            self._priors = prior_objects(context)
            tris = prior_triangles(self._priors, context.evaluated_depsgraph_get())
            scene = context.scene
            cam = scene_bridge.scene_camera(scene) if scene.camera is not None else None
            H, W = rgba.shape[:2]
            job = FitJob(rgba[..., 3].copy(), tris, start_camera(cam, W, H), self.fit_focal)
        except NearError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return self.run_job(context, job, fit_on_worker)

    def finish(self, context: Any, result: Any) -> None:
        from near_blender.data.camera_fit import MAX_ROLL, iou_warning, roll_deg

        scene = context.scene
        cam_obj = scene.camera
        if cam_obj is None or cam_obj.type != "CAMERA":
            cam_obj = bpy.data.objects.new("NeAR Camera", bpy.data.cameras.new("NeAR Camera"))
            scene.collection.objects.link(cam_obj)
            scene.camera = cam_obj
        fitted = result.camera
        keep_x = scene.render.resolution_x  # keep the render width; the height follows the photo
        height = max(1, round(keep_x * fitted.height / fitted.width))
        scene_bridge.apply_camera(fitted.resized(keep_x, height), cam_obj, scene)
        msg = f"Camera fitted: silhouette IoU {result.start_iou:.2f} -> {result.iou:.2f}"
        warning = iou_warning(result.iou, "Object > NeAR > Fit Camera to Image from a camera that roughly frames "
                              "the photo (or tick Fit Focal Length)")  # fmt: skip
        roll = roll_deg(fitted)
        if warning:
            self.report({"WARNING"}, f"{msg}. {warning}")
        elif abs(roll) > MAX_ROLL:
            self.report({"WARNING"}, f"{msg}, but the camera is rolled by {roll:.0f} degrees: is the mesh lying on "
                        "its side? Rotate it upright (Object > Transform) and fit again.")  # fmt: skip
        else:
            self.report({"INFO"}, msg)


class NEAR_MT_object(bpy.types.Menu):
    """Object > NeAR: the photo-to-asset tools (and baking an asset onto its mesh)."""

    bl_idname = "NEAR_MT_object"
    bl_label = "NeAR"

    def draw(self, context: Any) -> None:
        self.layout.operator(NEAR_OT_fit_camera.bl_idname, text="Fit Camera to Image...", icon="CAMERA_DATA")
        self.layout.operator("near.import_image", text="Image as NeAR Asset...", icon="IMAGE_DATA")
        self.layout.operator("near.bake_pbr", text="Bake PBR to Mesh...", icon="TEXTURE")


def menu_object(self: Any, context: Any) -> None:
    self.layout.separator()
    self.layout.menu(NEAR_MT_object.bl_idname)


classes = (NEAR_OT_fit_camera, NEAR_MT_object)
MENUS = ((bpy.types.VIEW3D_MT_object, menu_object),)
