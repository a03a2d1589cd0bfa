"""NeAR: the coupled neural asset-renderer stack, without Blender.

Nothing in this package imports ``bpy``: it runs on training clusters, CI shards and notebooks.
Conventions used everywhere inside the stack:

* world space is Blender's: right-handed, Z up, metres;
* cameras are OpenCV pinhole (or orthographic) cameras: a world-to-camera 4x4 matrix with
  x right, y down, z forward, and intrinsics K in pixels whose centres sit at (i + 0.5, j + 0.5);
* environment maps are Blender's equirectangular layout (see :mod:`near_blender.render.envmap`),
  scene-linear Rec.709 radiance, stored top row first as float32 ``[H, W, 3]``.
"""

from __future__ import annotations

__version__ = "0.1.0"


class NearError(RuntimeError):
    """An error whose message tells the user what went wrong and how to fix it.

    Everything user-facing (CLI, Blender operators, the render engine) shows these messages as they
    are, without a traceback.
    """
