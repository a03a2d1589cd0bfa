"""File > Import > Image as NeAR Asset: a casually lit image + the selected meshes (together the
geometry prior, e.g. from an image-to-3D model) -> an LH-SLAT sidecar and a NeAR asset object.

Only what must be read from Blender happens on the main thread (the image, the prior's triangles,
the sidecar path, which model, the scene camera); voxelizing the prior, loading the model and stage 1
run on a worker thread (the UI keeps drawing, the status bar shows progress, Esc cancels at the next
step). The sidecar ``<image>.near.npz`` is written next to the .blend
(atomically, only when stage 1 finished) and referenced by a relative path; the asset object is an
Empty whose transform maps the canonical box [-0.5, 0.5]^3 onto the bounding box of all the prior's
meshes, so moving, rotating or scaling it moves the Gaussians.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from bpy.props import IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from near_blender import NearError
from near_blender.data.slat_io import save_slat_npz
from near_blender.data.voxelize import voxelize_prior
from near_blender.utils.progress import Cancelled

from ..engine import scene_bridge
from .datagen.assets import GEOMETRY_TYPES, evaluated_triangles
from .worker_modal import WorkerModal

IMAGE_EXTENSIONS = ".png;.jpg;.jpeg;.exr;.hdr;.tif;.tiff;.webp;.bmp"


# ---------------------------------------------------------------------------------------------
# Pieces (usable without the operator: scripts and tests call them directly)
# ---------------------------------------------------------------------------------------------


def read_image_rgba(path: str | Path) -> np.ndarray:
    """An image file as premultiplied scene-linear RGBA ``[H, W, 4]`` (row 0 at the top).

    Raises :class:`NearError` for unreadable files and for images without a usable alpha channel
    (the background must be removed: NeAR needs to know which pixels are the object).
    """
    p = Path(path)
    if not p.is_file():
        raise NearError(f"Image not found: {p}")
    try:
        img = bpy.data.images.load(str(p), check_existing=False)
    except RuntimeError as e:
        raise NearError(
            f"Cannot read the image {p.name} ({e}). Is it a complete PNG, JPEG or EXR file?"
        ) from None
    try:
        w, h = img.size[:]
        if w == 0 or h == 0:
            raise NearError(f"Cannot read the image {p.name}: it is empty or corrupt.")
        rgb = scene_bridge.image_pixels_linear(img, f"image {p.name}")
        c = img.channels
        buf = np.empty(w * h * c, dtype=np.float32)
        img.pixels.foreach_get(buf)
        alpha = buf.reshape(h, w, c)[::-1, :, 3] if c == 4 else np.ones((h, w), np.float32)
    finally:
        bpy.data.images.remove(img)
    covered = float((alpha > 0.5).mean())
    if c != 4 or covered > 0.995:
        raise NearError(
            f"The image {p.name} has no transparent background (alpha is {'missing' if c != 4 else 'all opaque'}). "
            "Remove the background first (e.g. with an image editor or rembg) and save it as a PNG/EXR with alpha."
        )
    if covered < 1e-4:
        raise NearError(f"The image {p.name} is fully transparent: there is no object in it.")
    return np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=-1).astype(np.float32)


def prior_objects(context: Any) -> list[Any]:
    """The objects that form the geometry prior: the selected ones, or the active object when
    nothing is selected."""
    objects = list(context.selected_objects)
    if not objects and context.active_object is not None:
        objects = [context.active_object]
    return objects


def prior_triangles(objects: Any, depsgraph: Any) -> np.ndarray:
    """World-space triangles ``[F, 3, 3]`` of all ``objects``' evaluated geometry together (meshes,
    curves, surfaces, metaballs and text with faces, modifiers applied, and what they instance);
    other objects (cameras, lights, empties) add nothing. Raises :class:`NearError` when nothing
    has faces."""
    objects = list(objects)
    tris = evaluated_triangles(None, objects, depsgraph)
    if len(tris):
        return tris
    names = ", ".join(f"{o.name!r} ({o.type.lower()})" for o in objects[:4])
    names += ", ..." if len(objects) > 4 else ""
    if not objects:
        what = "Nothing is selected"
    elif not any(o.type in GEOMETRY_TYPES for o in objects):
        what = f"The selection ({names}) has no mesh"
    else:
        what = f"None of the selected objects ({names}) has faces"
    raise NearError(
        f"{what}. Select the mesh(es) of the geometry prior in the 3D Viewport (the shape of the object in "
        "the image, e.g. from an image-to-3D model such as Hunyuan3D; several meshes form one prior), then "
        "use File > Import > Image as NeAR Asset again."
    )


def renders_geometry(obj: Any) -> bool:
    """Whether ``obj`` can put geometry in a render (a geometry object or a collection instance)."""
    return obj.type in GEOMETRY_TYPES or obj.instance_type == "COLLECTION"


def sidecar_path(image_path: str | Path) -> tuple[Path, str]:
    """(absolute path, Blender-relative path) of a new sidecar next to the saved .blend."""
    if not bpy.data.filepath:
        raise NearError(
            "Save the .blend file first: the asset's LH-SLAT is stored next to it (<image>.near.npz), "
            "not inside it."
        )
    folder = Path(bpy.path.abspath("//"))
    stem = Path(image_path).stem
    p = folder / f"{stem}.near.npz"
    k = 1
    while p.exists():
        p = folder / f"{stem}.{k:03d}.near.npz"
        k += 1
    return p, bpy.path.relpath(str(p))


def input_camera(
    scene: Any, image_shape: tuple[int, ...], matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The scene camera taken as the camera that shot the image: ``(viewmat, K)`` in the asset's
    object space (``matrix``: object to world), ``K`` scaled to the image's pixels."""
    camera = scene_bridge.scene_camera(scene) if scene.camera is not None else None
    return camera_for_image(camera, image_shape, matrix)


def camera_for_image(
    cam: Any, image_shape: tuple[int, ...], matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`input_camera` from an already read scene camera (``None``: the scene has none); bpy-free."""
    if cam is None:
        raise NearError(
            "This model projects the image onto the geometry prior and needs the camera that took it: add "
            "a scene camera that frames the prior as the photo does (e.g. with fSpy), then import again."
        )
    from near_blender.render.camera import check_image_size

    H, W = int(image_shape[0]), int(image_shape[1])
    check_image_size(cam, W, H, "set Output Properties > Format > Resolution to the photo's aspect ratio so the "
                     "camera frames it as it was taken.")  # fmt: skip
    cam = cam.resized(W, H)
    return np.asarray(cam.viewmat, np.float64) @ np.asarray(matrix, np.float64), cam.K


def check_camera_frames_prior(cam: Any, rgba: np.ndarray, triangles: np.ndarray) -> None:
    """Refuse the import when the prior seen through the scene camera ``cam`` does not cover the
    image's object (silhouette IoU below :data:`near_blender.data.camera_fit.GOOD_IOU`); bpy-free."""
    from near_blender.data.camera_fit import cloud_from_triangles, iou_warning, silhouette_iou

    H, W = rgba.shape[:2]
    iou = silhouette_iou(cloud_from_triangles(triangles), cam.resized(W, H), rgba[..., 3])
    warning = iou_warning(iou, "Object > NeAR > Fit Camera to Image (same photo, prior selected)")
    if warning:
        raise NearError(f"{warning} Then import again, or untick Check Camera to import anyway.")


def run_stage1(
    pipe: Any,
    rgba: np.ndarray,
    coords: np.ndarray,
    out_path: Path,
    seed: int = 0,
    steps: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    camera: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Stage 1 and the sidecar write (bpy-free; runs on a worker thread). Nothing is written when
    cancelled or failed. ``camera``: see :meth:`NearPipeline.image_to_slat`."""
    feats = pipe.image_to_slat(
        rgba, coords, seed=seed, steps=steps, progress=progress, cancel=cancel, camera=camera
    )
    if cancel is not None and cancel():
        raise Cancelled("Cancelled by the user.")
    save_slat_npz(out_path, coords, feats)
    return feats


@dataclass(frozen=True)
class ImportJob:
    """What the import reads from Blender on the main thread; the rest runs on a worker."""

    triangles: np.ndarray  # [F, 3, 3] world-space triangles of the geometry prior (all its objects)
    rgba: np.ndarray  # [H, W, 4] premultiplied scene-linear
    out_path: Path  # the sidecar to write
    model: Any  # engine.model_manager.ModelSpec
    scene_camera: Any  # near_blender Camera of the scene camera, or None
    seed: int = 0
    steps: int | None = None
    check_camera: bool = True  # refuse a camera whose view of the prior does not match the image's alpha


@dataclass(frozen=True)
class ImportResult:
    coords: np.ndarray  # [N, 3] voxels of the prior
    matrix: np.ndarray  # [4, 4] the asset's matrix_world
    model_id: str


def import_on_worker(
    job: ImportJob,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ImportResult:
    """Voxelize the prior, load the model, run stage 1 and write the sidecar (bpy-free, any thread)."""
    from ..engine.model_manager import get_pipeline

    def say(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)
        if cancel is not None and cancel():
            raise Cancelled("Cancelled by the user.")

    say(0.0, "voxelizing the geometry prior")
    coords, matrix = voxelize_prior(job.triangles)
    say(0.0, "loading the model")
    pipe = get_pipeline(job.model)
    camera = camera_for_image(job.scene_camera, job.rgba.shape, matrix) if pipe.needs_input_camera else None
    if camera is not None and job.check_camera:
        say(0.0, "checking the camera against the image")
        check_camera_frames_prior(job.scene_camera, job.rgba, job.triangles)
    run_stage1(pipe, job.rgba, coords, job.out_path, job.seed, job.steps, progress, cancel, camera)
    return ImportResult(coords, matrix, str(pipe.args.get("model_id", "")))


def create_asset_object(
    context: Any, name: str, sidecar_rel: str, matrix_world: np.ndarray, image_path: str, model_id: str = ""
) -> Any:
    """An Empty (cube display = the canonical box) marked as a NeAR asset, linked to the scene."""
    import mathutils

    obj = bpy.data.objects.new(name, None)
    obj.empty_display_type = "CUBE"
    obj.empty_display_size = 0.5  # the cube spans [-0.5, 0.5]^3 in object space
    obj.matrix_world = mathutils.Matrix(np.asarray(matrix_world).tolist())
    props = obj.near_asset
    props.is_asset = True
    props.sidecar = sidecar_rel
    props.source_image = image_path
    props.model_id = model_id
    context.collection.objects.link(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# The operator
# ---------------------------------------------------------------------------------------------


class NEAR_OT_import_image(bpy.types.Operator, ImportHelper, WorkerModal):
    """Turn an image (background removed) and the selected meshes into a relightable NeAR asset"""

    bl_idname = "near.import_image"
    bl_label = "Image as NeAR Asset"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ""
    filter_glob: StringProperty(default="*" + ";*".join(IMAGE_EXTENSIONS.split(";")), options={"HIDDEN"})  # type: ignore[valid-type]
    seed: IntProperty(name="Seed", default=0, min=0)  # type: ignore[valid-type]
    steps: IntProperty(name="Sampling Steps", default=0, min=0, description="0 = the model's default")  # type: ignore[valid-type]
    hide_prior: bpy.props.BoolProperty(name="Hide Prior from Render", default=True)  # type: ignore[valid-type]
    check_camera: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Check Camera", default=True,
        description="Stop when the prior seen through the scene camera does not match the image's object "
        "(fit it with Object > NeAR > Fit Camera to Image)",
    )  # fmt: skip

    work_label = "NeAR import"

    def _prepare(self, context: Any) -> ImportJob:
        """Everything read from Blender (main thread): the image first (a bad file fails fast), the
        prior's triangles, the sidecar path, which model, the scene camera. No heavy work here."""
        from ..engine.model_manager import model_spec
        from ..engine.session import RenderSession

        rgba = read_image_rgba(self.filepath)
        self._priors = prior_objects(context)
        tris = prior_triangles(self._priors, context.evaluated_depsgraph_get())
        out_abs, self._out_rel = sidecar_path(self.filepath)
        scene = context.scene
        camera = scene_bridge.scene_camera(scene) if scene.camera is not None else None
        return ImportJob(tris, rgba, out_abs, model_spec(RenderSession.preferences()), camera, self.seed,
                         self.steps or None, self.check_camera)  # fmt: skip

    def _finish(self, context: Any, result: ImportResult) -> Any:
        obj = create_asset_object(context, Path(self.filepath).stem, self._out_rel, result.matrix, self.filepath,
                                  model_id=result.model_id)  # fmt: skip
        if self.hide_prior:  # the asset replaces every object of the prior in renders (not lights)
            for o in self._priors:
                o.hide_render = o.hide_render or renders_geometry(o)
        for o in context.selected_objects:
            o.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report(
            {"INFO"}, f"NeAR asset {obj.name!r} created ({len(result.coords)} voxels, {self._out_rel})"
        )
        return obj

    def execute(self, context: Any) -> set[str]:
        try:
            job = self._prepare(context)
        except NearError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return self.run_job(context, job, import_on_worker)  # worker thread in the UI, Esc cancels

    def finish(self, context: Any, result: ImportResult) -> None:
        self._finish(context, result)


def menu_import(self: Any, context: Any) -> None:
    self.layout.operator(NEAR_OT_import_image.bl_idname, text="Image as NeAR Asset (.png/.jpg/.exr)")


def menu_add(self: Any, context: Any) -> None:
    self.layout.operator(NEAR_OT_import_image.bl_idname, text="NeAR Asset from Image", icon="IMAGE_DATA")


classes = (NEAR_OT_import_image,)
MENUS = ((bpy.types.TOPBAR_MT_file_import, menu_import), (bpy.types.VIEW3D_MT_add, menu_add))
