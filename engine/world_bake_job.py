"""Render a world alone to an equirectangular EXR with Cycles (the bake of :mod:`.world_bake`).

Importable (``render_world_exr``, for a bake on the main thread outside a render) and runnable as a
script in a separate Blender process, for bakes asked for while a render is running (F12 cannot
start a second render inside itself)::

    python world_bake_job.py LIBRARY.blend WORLD_NAME WIDTH HEIGHT SAMPLES OUT.exr

Only bpy and mathutils are needed, so it runs in any Blender.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

BAKE_NAME = ".near-world-bake"


def render_world_exr(world: Any, width: int, height: int, samples: int, out: str | Path) -> None:
    """Render ``world`` through a panoramic equirectangular camera at the origin looking along +X
    with Z up (image centre = +X, top row = up), in a temporary scene without objects, to a float32
    EXR ``out``. Main thread only; not while another render runs."""
    import bpy
    import mathutils

    scene = bpy.data.scenes.new(BAKE_NAME)
    cam_data = bpy.data.cameras.new(BAKE_NAME)
    cam = bpy.data.objects.new(BAKE_NAME, cam_data)
    try:
        scene.world = world
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        scene.cycles.filter_width = 1.0  # a one-pixel footprint: each texel averages its own solid angle
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = False
        scene.view_settings.view_transform = "Standard"
        settings = scene.render.image_settings
        settings.media_type = "IMAGE"
        settings.file_format = "OPEN_EXR"
        settings.color_depth = "32"
        cam_data.type = "PANO"
        cam_data.panorama_type = "EQUIRECTANGULAR"
        cam_data.latitude_min, cam_data.latitude_max = -math.pi / 2, math.pi / 2
        cam_data.longitude_min, cam_data.longitude_max = -math.pi, math.pi
        scene.collection.objects.link(cam)
        scene.camera = cam
        # camera axes in the world: right = -Y, up = +Z, backwards = -X (so it looks along +X)
        cam.matrix_world = mathutils.Matrix(((0, 0, -1), (-1, 0, 0), (0, 1, 0))).to_4x4()
        scene.render.filepath = str(out)
        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        bpy.data.objects.remove(cam)
        bpy.data.cameras.remove(cam_data)
        bpy.data.scenes.remove(scene)


def main(argv: list[str]) -> int:
    import bpy

    library, world_name, width, height, samples, out = argv
    with bpy.data.libraries.load(library, link=False) as (src, dst):
        if world_name not in src.worlds:
            print(f"world_bake_job: no world {world_name!r} in {library}", file=sys.stderr)
            return 1
        dst.worlds = [world_name]
    render_world_exr(dst.worlds[0], int(width), int(height), int(samples), out)
    return 0 if Path(out).is_file() else 1


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(args))
