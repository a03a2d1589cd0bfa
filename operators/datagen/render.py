"""Engine settings and the one render per view and lighting that yields every pass at once.

Blender writes one multilayer EXR (float32, multi-part) per render holding Combined, Depth,
Normal, Diffuse Direct/Indirect/Colour and the material AOVs; :func:`render_view` converts it into
the dataset's view file (``near_blender.data.views``) and removes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from near_blender import NearError
from near_blender.data.config import DatagenConfig
from near_blender.data.views import AOVS, read_blender_passes
from near_blender.render.camera import Camera

from ...engine import scene_bridge


def configure_scene(scene: Any, cfg: DatagenConfig, threads: int = 0) -> None:
    """Engine, samples, film, colour management, passes and output format of the data renders.

    Deterministic settings: Cycles uses a fixed seed (no animated seed) and no adaptive sampling,
    so re-rendering a view gives the same pixels.
    """
    r = scene.render
    r.engine = cfg.blender_engine
    r.resolution_x = r.resolution_y = cfg.resolution
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    # Crisp pixels (TRELLIS renders with a 1-pixel box filter): alpha is the pixel's coverage,
    # G-buffers mix as little as possible across edges.
    r.filter_size = 1.0
    r.use_compositing = False
    r.use_sequencer = False
    r.use_persistent_data = False
    if threads > 0:
        r.threads_mode = "FIXED"
        r.threads = threads
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    fmt = r.image_settings
    fmt.media_type = "MULTI_LAYER_IMAGE"
    fmt.file_format = "OPEN_EXR_MULTILAYER"
    fmt.color_depth = "32"
    fmt.exr_codec = "NONE"
    if cfg.engine == "cycles":
        c = scene.cycles
        c.device = "CPU"
        c.samples = cfg.samples
        c.use_adaptive_sampling = False
        c.seed = cfg.seed
        c.use_animated_seed = False
        c.pixel_filter_type = "BOX"
        c.use_denoising = cfg.denoise
        if cfg.denoise:
            c.denoiser = "OPENIMAGEDENOISE"
            c.denoising_prefilter = cfg.denoise_prefilter.upper()  # FAST | ACCURATE
    else:
        e = scene.eevee
        e.taa_render_samples = cfg.samples
        e.use_raytracing = True  # paper 4.1: EEVEE Next with ray tracing
        e.use_shadows = True
    vl = scene.view_layers[0]
    vl.use_pass_combined = True
    vl.use_pass_z = True
    vl.use_pass_normal = True
    vl.use_pass_diffuse_direct = True
    vl.use_pass_diffuse_indirect = True
    vl.use_pass_diffuse_color = True
    have = {a.name for a in vl.aovs}
    for name, kind in AOVS.items():
        if name not in have:
            aov = vl.aovs.add()
            aov.name = name
            aov.type = kind


def ensure_camera(scene: Any) -> Any:
    """The scene's data camera object (created once per asset scene)."""
    obj = scene.camera
    if obj is None or obj.type != "CAMERA":
        obj = bpy.data.objects.new("NeAR Camera", bpy.data.cameras.new("NeAR Camera"))
        scene.collection.objects.link(obj)
        scene.camera = obj
    return obj


def place_camera(camera: Camera, cam_obj: Any, scene: Any) -> dict[str, Any]:
    """Push a stack camera into Blender; returns the Blender-side record for ``cameras.json``."""
    scene_bridge.apply_camera(camera, cam_obj, scene)
    view_layer = scene.view_layers[0]
    view_layer.update()
    cd = cam_obj.data
    P = cam_obj.calc_matrix_camera(view_layer.depsgraph, x=camera.width, y=camera.height)
    return {
        "matrix_world": [list(row) for row in cam_obj.matrix_world],
        "projection": [list(row) for row in P],
        "lens_mm": cd.lens,
        "sensor_width_mm": cd.sensor_width,
        "sensor_fit": cd.sensor_fit,
        "shift": [cd.shift_x, cd.shift_y],
        "clip": [cd.clip_start, cd.clip_end],
    }


def render_view(scene: Any, tmp_path: Path) -> dict[str, np.ndarray]:
    """Render ``scene`` once into ``tmp_path`` (multilayer EXR) and return its passes."""
    scene.render.filepath = str(tmp_path)
    try:
        result = bpy.ops.render.render(write_still=True, scene=scene.name)
        if "FINISHED" not in result or not tmp_path.is_file():
            raise NearError(f"Blender did not render the view ({result}); see Blender's output above.")
        return read_blender_passes(tmp_path, scene.view_layers[0].name)
    finally:
        if tmp_path.exists():
            os.unlink(tmp_path)
