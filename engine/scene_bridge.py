"""Scene bridge: Blender's camera, viewport and world -> the stack's Camera and Environment.

This is the only place where Blender data is read into NeAR conditions (and where the data
generator pushes stack cameras back into Blender), so that F12, the viewport, datagen and training
agree. The arithmetic lives in ``near_blender.render.camera`` / ``near_blender.render.envmap``
(bpy-free, unit-tested); this module only reads the Blender values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.camera import (
    Camera,
    blender_matrix_world_from_viewmat,
    camera_from_blender_params,
    camera_from_view_matrices,
    render_size,
)
from near_blender.render.color import srgb_to_linear
from near_blender.render.envmap import Environment, sanitize_radiance

# ---------------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------------


def scene_render_size(scene: Any) -> tuple[int, int]:
    """The final render size in pixels (resolution times percentage), as Blender computes it."""
    r = scene.render
    return render_size(r.resolution_x, r.resolution_y, r.resolution_percentage)


def camera_from_object(cam_obj: Any, scene: Any, matrix_world: Any = None) -> Camera:
    """The stack :class:`Camera` of a Blender camera object rendering ``scene``.

    ``matrix_world`` overrides the object's transform (RenderEngine.camera_model_matrix gives the
    one Blender renders with, e.g. for motion blur or multiview).
    """
    if cam_obj is None:
        raise NearError(
            f"Scene {scene.name!r} has no active camera. Add a camera and make it active "
            "(Scene Properties > Camera, or Ctrl+Numpad0 on a camera)."
        )
    if cam_obj.type != "CAMERA":
        raise NearError(f"Object {cam_obj.name!r} is a {cam_obj.type}, not a camera.")
    cd = cam_obj.data
    w, h = scene_render_size(scene)
    r = scene.render
    return camera_from_blender_params(
        matrix_world if matrix_world is not None else cam_obj.matrix_world,
        type=cd.type,
        width=w,
        height=h,
        lens=cd.lens,
        sensor_width=cd.sensor_width,
        sensor_height=cd.sensor_height,
        sensor_fit=cd.sensor_fit,
        shift_x=cd.shift_x,
        shift_y=cd.shift_y,
        ortho_scale=cd.ortho_scale,
        clip_start=cd.clip_start,
        clip_end=cd.clip_end,
        pixel_aspect_x=r.pixel_aspect_x,
        pixel_aspect_y=r.pixel_aspect_y,
        name=cam_obj.name,
    )


def scene_camera(scene: Any, camera_override: Any = None) -> Camera:
    """The camera a final render of ``scene`` uses (``camera_override`` wins, as in RenderEngine)."""
    return camera_from_object(camera_override or scene.camera, scene)


def viewport_camera(region: Any, region_data: Any, scale: int = 1) -> Camera:
    """The stack :class:`Camera` of a 3D viewport region (``context.region``,
    ``context.region_data``): its view and window matrices already include camera-view zoom/offset.
    ``scale`` > 1 renders the same view at 1/scale of the region's pixels (rounded down, >= 1)."""
    if region_data is None:
        raise NearError("No 3D viewport region: run this from a 3D Viewport.")
    w, h = max(1, region.width // scale), max(1, region.height // scale)
    return camera_from_view_matrices(region_data.view_matrix, region_data.window_matrix, w, h)


def apply_camera(camera: Camera, cam_obj: Any, scene: Any) -> None:
    """Make a Blender camera object (and the scene's render size) render exactly ``camera``.

    Used by the data generator, which samples cameras in the stack's convention. Needs square
    pixels (fx == fy for pinhole); principal-point offsets become lens shift.
    """
    import mathutils

    w, h = camera.width, camera.height
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    if abs(fx - fy) > 1e-6 * max(fx, fy):
        raise NearError("apply_camera needs square pixels (fx == fy).")
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = w, h, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    cd = cam_obj.data
    cd.sensor_fit = "HORIZONTAL"
    cd.shift_x = (w / 2.0 - cx) / w
    cd.shift_y = (cy - h / 2.0) / w
    if camera.model == "pinhole":
        cd.type = "PERSP"
        cd.sensor_width = 36.0
        cd.lens = fx / w * cd.sensor_width
    else:
        cd.type = "ORTHO"
        cd.ortho_scale = w / fx
    cd.clip_start = max(camera.near, 1e-6)
    cd.clip_end = min(camera.far, 1e6)
    M = blender_matrix_world_from_viewmat(camera.viewmat)
    cam_obj.matrix_world = mathutils.Matrix(M.tolist())


# ---------------------------------------------------------------------------------------------
# World -> Environment
# ---------------------------------------------------------------------------------------------

_DIRECTION_OUTPUTS = {"Generated", "Object"}  # world texture coordinates that are view directions


def _node_label(node: Any) -> str:
    return f"'{node.name}' ({node.bl_idname})"


def _upstream(socket: Any) -> tuple[Any, Any] | None:
    """(node, output socket) feeding ``socket``, through reroutes and muted links; None if unlinked."""
    links = [lk for lk in socket.links if not lk.is_muted]
    if not links:
        return None
    node, out = links[0].from_node, links[0].from_socket
    while node.bl_idname == "NodeReroute":
        links = [lk for lk in node.inputs[0].links if not lk.is_muted]
        if not links:
            return None
        node, out = links[0].from_node, links[0].from_socket
    return node, out


class UnsupportedWorldGraph(NearError):
    """The world's node graph is not one Environment Texture or a plain colour (it can be baked)."""


def environment_from_world(world: Any, name: str | None = None) -> Environment:
    """The :class:`Environment` that ``world`` lights the scene with.

    Supported graphs (what the NeAR engine and the data generator produce, and what artists use
    for HDRI lighting): World Output <- Background (Strength unlinked) <- either a plain colour or
    an Environment Texture (equirectangular) whose Vector is unlinked, or comes from a Texture
    Coordinate (Generated/Object), optionally through a Mapping node that rotates about Z.
    Anything else raises :class:`NearError` naming the node that is not supported.
    """
    if world is None:
        raise NearError("The scene has no World. Add one in Scene Properties > World (an HDRI or a colour).")
    label = name or world.name
    tree = world.node_tree
    if tree is None:
        raise NearError(
            f"World {label!r} has no shader node tree. Open World Properties and click 'Use Nodes', "
            "then connect an Environment Texture (HDRI) or set the Background colour."
        )
    out = tree.get_output_node("ALL")
    if out is None:
        raise NearError(f"World {label!r} has no active World Output node; add one and connect a Background.")
    up = _upstream(out.inputs["Surface"])
    if up is None:  # nothing connected: Blender renders a black world
        env = Environment.uniform((0.0, 0.0, 0.0), name=label)
        return Environment(env.radiance, 0.0, label, {"source": "unlinked"})
    bg, _ = up
    if bg.bl_idname != "ShaderNodeBackground":
        raise UnsupportedWorldGraph(
            f"World {label!r}: node {_node_label(bg)} feeds the World Output; NeAR supports a Background "
            "node there (with an Environment Texture or a plain colour)."
        )
    if _upstream(bg.inputs["Strength"]) is not None:
        raise UnsupportedWorldGraph(
            f"World {label!r}: the Background Strength is driven by a node; use a plain number."
        )
    strength = float(bg.inputs["Strength"].default_value)
    if not np.isfinite(strength) or strength < 0:
        raise NearError(
            f"World {label!r}: the Background Strength is {strength}; set a number >= 0 in World Properties > "
            "Surface > Strength."
        )
    colour_src = _upstream(bg.inputs["Color"])
    if colour_src is None:
        c = np.asarray(bg.inputs["Color"].default_value[:3], dtype=np.float32) * strength
        env = Environment.uniform(c, name=label)
        return Environment(env.radiance, 0.0, label, {"source": "colour", "strength": strength})
    tex, _ = colour_src
    if tex.bl_idname != "ShaderNodeTexEnvironment":
        raise UnsupportedWorldGraph(
            f"World {label!r}: node {_node_label(tex)} feeds the Background colour; NeAR supports an "
            "Environment Texture (equirectangular HDRI) or a plain colour there."
        )
    if tex.projection != "EQUIRECTANGULAR":
        raise UnsupportedWorldGraph(
            f"World {label!r}: Environment Texture {tex.name!r} uses {tex.projection} projection; "
            "set it to Equirectangular."
        )
    rotation = _texture_rotation(tex, label)
    radiance, counts = sanitize_radiance(
        image_pixels_linear(tex.image, f"World {label!r}, node {tex.name!r}")
    )
    meta = {"source": "image", "image": tex.image.name, "strength": strength}
    changed = {k: v for k, v in counts.items() if v}
    if changed:  # repaired as Cycles and EEVEE treat them: NaN and negatives 0, +Inf the brightest value
        what = ", ".join(
            f"{v} {k.replace('posinf', '+Inf').replace('neginf', '-Inf')}" for k, v in changed.items()
        )
        meta["repaired"] = (
            f"World {label!r}: image {tex.image.name!r} has {what} pixel values; NeAR rendered them as Cycles "
            "does (NaN and negative as 0, +Inf as the brightest finite value)."
        )
    env = Environment(radiance, rotation, label, meta)
    return env.scaled(strength) if strength != 1.0 else env


def _texture_rotation(tex: Any, label: str) -> float:
    """Z rotation (radians, Mapping-node convention) of the Environment Texture's lookup vector."""
    src = _upstream(tex.inputs["Vector"])
    if src is None:
        return 0.0
    node, sock = src
    if node.bl_idname == "ShaderNodeTexCoord":
        _check_direction_output(node, sock, label)
        return 0.0
    if node.bl_idname != "ShaderNodeMapping":
        raise UnsupportedWorldGraph(
            f"World {label!r}: node {_node_label(node)} drives the Environment Texture vector; NeAR "
            "supports a Mapping node (rotation about Z) fed by Texture Coordinate (Generated)."
        )
    for key in ("Location", "Rotation", "Scale"):
        if key in node.inputs and _upstream(node.inputs[key]) is not None:
            raise UnsupportedWorldGraph(
                f"World {label!r}: the Mapping node's {key} is driven by a node; use plain values."
            )
    rot = (
        [float(v) for v in node.inputs["Rotation"].default_value] if "Rotation" in node.inputs else [0, 0, 0]
    )
    loc = (
        [float(v) for v in node.inputs["Location"].default_value] if "Location" in node.inputs else [0, 0, 0]
    )
    scale = [float(v) for v in node.inputs["Scale"].default_value] if "Scale" in node.inputs else [1, 1, 1]
    if abs(rot[0]) > 1e-6 or abs(rot[1]) > 1e-6:
        raise UnsupportedWorldGraph(
            f"World {label!r}: Mapping node {node.name!r} rotates about X/Y ({math.degrees(rot[0]):.1f}, "
            f"{math.degrees(rot[1]):.1f} deg); NeAR environments may only rotate about Z."
        )
    if node.vector_type in ("POINT", "TEXTURE") and any(abs(v) > 1e-6 for v in loc):
        raise UnsupportedWorldGraph(
            f"World {label!r}: Mapping node {node.name!r} has a Location offset; set it to 0."
        )
    if min(scale) <= 0 or max(scale) - min(scale) > 1e-6 * max(scale):
        raise UnsupportedWorldGraph(
            f"World {label!r}: Mapping node {node.name!r} needs a uniform positive Scale."
        )
    inner = _upstream(node.inputs["Vector"])
    if inner is None:
        raise UnsupportedWorldGraph(
            f"World {label!r}: Mapping node {node.name!r} has no input vector; connect a Texture "
            "Coordinate node's Generated output to it."
        )
    tc, tc_sock = inner
    if tc.bl_idname != "ShaderNodeTexCoord":
        raise UnsupportedWorldGraph(
            f"World {label!r}: node {_node_label(tc)} feeds the Mapping node; NeAR supports a Texture "
            "Coordinate node (Generated) there."
        )
    _check_direction_output(tc, tc_sock, label)
    return -rot[2] if node.vector_type == "TEXTURE" else rot[2]


def _check_direction_output(node: Any, sock: Any, label: str) -> None:
    if sock.name not in _DIRECTION_OUTPUTS:
        raise UnsupportedWorldGraph(
            f"World {label!r}: Texture Coordinate output {sock.name!r} is not a view direction; "
            "use its Generated output."
        )


def image_pixels_linear(image: Any, where: str) -> np.ndarray:
    """A Blender image as scene-linear float32 [H, W, 3], row 0 at the top.

    Works for images loaded from disk (absolute or ``//`` relative paths), packed into the .blend,
    or only in memory (generated / rendered). Byte images in sRGB are linearized; float images are
    already scene-linear in Blender's memory.
    """
    if image is None:
        raise NearError(f"{where}: no image is assigned. Open an HDRI in the Environment Texture node.")
    image = getattr(image, "original", None) or image  # pixels live on the original (not the evaluated copy)
    w, h = image.size[:]
    if w == 0 or h == 0:
        import bpy

        path = bpy.path.abspath(image.filepath) if image.filepath else "(no path)"
        raise NearError(
            f"{where}: image {image.name!r} could not be loaded from {path}. The file is missing or "
            "unreadable: relink it (Image > Replace) or pack it into the .blend."
        )
    c = image.channels
    buf = np.empty(w * h * c, dtype=np.float32)
    image.pixels.foreach_get(buf)
    img = buf.reshape(h, w, c)[::-1, :, :3]
    if c < 3:
        img = np.repeat(buf.reshape(h, w, c)[::-1, :, :1], 3, axis=2)
    img = np.ascontiguousarray(img)
    cs = image.colorspace_settings
    if not image.is_float and not cs.is_data and cs.name.lower().startswith("srgb"):
        img = srgb_to_linear(img)
    return img
