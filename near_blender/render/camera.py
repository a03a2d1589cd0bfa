"""Cameras: the one camera convention of the stack and every conversion into it.

Convention (the rasterizer's, gsplat's and OpenCV's):

* ``viewmat`` is a world-to-camera 4x4 matrix; camera axes are x right, y down, z forward;
* ``K`` is the 3x3 intrinsic matrix in pixels; a pixel (col i, row j) has its centre at
  (i + 0.5, j + 0.5); row 0 is the top of the image;
* pinhole: ``u = fx * x / z + cx``; orthographic: ``u = fx * x + cx`` (fx in pixels per metre);
* world space is Blender's (Z up).

Blender cameras look down their local -Z with +Y up, so the OpenCV camera-to-world rotation is
Blender's with its Y and Z axes negated. Intrinsics follow Blender's view-plane rules (sensor fit,
shift, resolution percentage, pixel aspect); they are checked against ``world_to_camera_view`` and
``calc_matrix_camera`` in the tests. Everything here is numpy float64 and bpy-free: the scene bridge
(``engine/scene_bridge.py``) reads the values from Blender and calls these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .. import NearError

CameraModel = Literal["pinhole", "ortho"]

# Blender camera axes (x right, y up, looking down -z) -> OpenCV (x right, y down, z forward).
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """A camera in the stack's convention (see the module docstring).

    Attributes:
        viewmat: [4, 4] world-to-camera (OpenCV axes), float64.
        K: [3, 3] intrinsics in pixels, float64.
        width, height: image size in pixels.
        near, far: clip distances along the optical axis (metres).
        model: ``"pinhole"`` or ``"ortho"``.
    """

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    near: float = 0.01
    far: float = 1e10
    model: CameraModel = "pinhole"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        vm = np.asarray(self.viewmat, dtype=np.float64)
        K = np.asarray(self.K, dtype=np.float64)
        if vm.shape != (4, 4) or K.shape != (3, 3):
            raise NearError(f"Camera needs a 4x4 viewmat and a 3x3 K, got {vm.shape} and {K.shape}.")
        if not (np.all(np.isfinite(vm)) and np.all(np.isfinite(K))):
            raise NearError("Camera matrices contain NaN or Inf; check the camera's transform and lens.")
        if self.width < 1 or self.height < 1:
            raise NearError(f"Camera image size must be positive, got {self.width}x{self.height}.")
        if self.model not in ("pinhole", "ortho"):
            raise NearError(f"Unknown camera model {self.model!r}; use 'pinhole' or 'ortho'.")
        object.__setattr__(self, "viewmat", vm)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    # -- derived quantities -------------------------------------------------------------------
    @property
    def c2w(self) -> np.ndarray:
        """[4, 4] camera-to-world (OpenCV axes)."""
        return np.linalg.inv(self.viewmat)

    @property
    def position(self) -> np.ndarray:
        """[3] camera centre in world space (for ortho: a point on the view axis)."""
        return self.c2w[:3, 3].copy()

    @property
    def forward(self) -> np.ndarray:
        """[3] unit viewing direction (camera +z) in world space."""
        return self.c2w[:3, 2].copy()

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points [N, 3] to continuous pixel coords [N, 2] and camera depth z [N]."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        pc = p @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        z = pc[:, 2]
        if self.model == "pinhole":
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = pc[:, :2] / z[:, None]
        else:
            xy = pc[:, :2]
        uv = xy * np.array([self.K[0, 0], self.K[1, 1]]) + np.array([self.K[0, 2], self.K[1, 2]])
        return uv, z

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ray origins and unit directions in world space, each [H, W, 3]."""
        j, i = np.meshgrid(np.arange(self.height) + 0.5, np.arange(self.width) + 0.5, indexing="ij")
        x = (i - self.K[0, 2]) / self.K[0, 0]
        y = (j - self.K[1, 2]) / self.K[1, 1]
        R = self.c2w[:3, :3]
        t = self.c2w[:3, 3]
        if self.model == "pinhole":
            d = np.stack([x, y, np.ones_like(x)], -1) @ R.T
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            o = np.broadcast_to(t, d.shape).copy()
        else:
            o = np.stack([x, y, np.zeros_like(x)], -1) @ R.T + t
            d = np.broadcast_to(R[:, 2], o.shape).copy()
        return o, d

    def resized(self, width: int, height: int) -> Camera:
        """The same camera rendering ``width`` x ``height`` pixels (intrinsics scaled)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return Camera(self.viewmat, K, width, height, self.near, self.far, self.model, dict(self.meta))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Camera:
        """The part of this camera's image whose top-left pixel is ``(x0, y0)``, ``width`` x
        ``height`` pixels (principal point shifted): rendering the tiles of an image one by one gives
        the same pixels as rendering the image."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return Camera(self.viewmat, K, width, height, self.near, self.far, self.model, dict(self.meta))

    # -- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the datasets' camera JSON)."""
        return {
            "model": self.model,
            "width": self.width,
            "height": self.height,
            "near": self.near,
            "far": self.far,
            "viewmat": self.viewmat.tolist(),
            "K": self.K.tolist(),
            **({"meta": self.meta} if self.meta else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        try:
            return cls(
                viewmat=np.asarray(d["viewmat"], dtype=np.float64),
                K=np.asarray(d["K"], dtype=np.float64),
                width=int(d["width"]),
                height=int(d["height"]),
                near=float(d.get("near", 0.01)),
                far=float(d.get("far", 1e10)),
                model=d.get("model", "pinhole"),
                meta=dict(d.get("meta", {})),
            )
        except KeyError as e:
            raise NearError(f"Camera JSON is missing the field {e.args[0]!r}.") from None


def write_camera_json(camera: Camera, path: str | Any) -> None:
    """Write ``camera`` as a camera JSON (:meth:`Camera.to_dict`) atomically.

    The one camera file of the stack: ``near camera-from-blend`` and ``near fit-camera`` write it;
    ``near import-image --camera``, ``near fit-camera --camera`` and ``near render --camera`` read
    it. ``viewmat`` is world-to-camera with OpenCV axes in Blender's Z-up world, ``K`` in pixels of
    a ``width`` x ``height`` image."""
    import json
    from pathlib import Path

    from ..utils.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(camera.to_dict(), indent=2) + "\n")


def read_camera_json(path: str | Any, flag: str = "--camera") -> Camera:
    """The camera of a camera JSON (see :func:`write_camera_json`); errors name ``flag``."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except OSError as e:
        raise NearError(f"{flag} {p}: cannot read the camera file ({e.strerror or e}).") from None
    except ValueError as e:
        raise NearError(f"{flag} {p}: not a JSON file ({e}).") from None
    if not isinstance(d, dict) or not {"viewmat", "K", "width", "height"} <= set(d):
        raise NearError(
            f"{flag} {p}: expected a camera JSON with 'viewmat' (4x4 world-to-camera, OpenCV axes, Z-up "
            "world), 'K' (3x3, pixels) and the image's 'width' and 'height', as `near camera-from-blend` "
            "writes."
        )
    try:
        V, K = np.asarray(d["viewmat"], np.float64), np.asarray(d["K"], np.float64)
        return Camera(V, K, int(d["width"]), int(d["height"]), float(d.get("near", 0.01)),
                      float(d.get("far", 1e10)), d.get("model", "pinhole"), dict(d.get("meta", {})))  # fmt: skip
    except (TypeError, ValueError, NearError) as e:
        raise NearError(f"{flag} {p}: 'viewmat' must be 4x4, 'K' 3x3 and the size positive ({e}).") from None


def check_image_size(camera: Camera, width: int, height: int, fix: str) -> None:
    """Refuse an image whose aspect ratio differs from the camera's (by more than 1%): the camera
    would not frame the object as the photo did. ``fix`` says what to change, in the user's terms."""
    a_img, a_cam = width / height, camera.width / camera.height
    if abs(a_img / a_cam - 1.0) > 0.01:
        raise NearError(
            f"The image is {width}x{height} (aspect {a_img:.3f}) but the camera renders "
            f"{camera.width}x{camera.height} (aspect {a_cam:.3f}): {fix}"
        )


# ---------------------------------------------------------------------------------------------
# Blender -> stack
# ---------------------------------------------------------------------------------------------


def viewmat_from_blender_matrix_world(matrix_world: Any) -> np.ndarray:
    """OpenCV world-to-camera [4, 4] from a Blender camera's ``matrix_world`` (any scale).

    Blender ignores the object's scale when it builds the view matrix, so the rotation columns are
    normalized first.
    """
    M = np.array(matrix_world, dtype=np.float64).reshape(4, 4)
    R = M[:3, :3]
    norms = np.linalg.norm(R, axis=0)
    if np.any(norms < 1e-12):
        raise NearError("The camera object has a zero scale; give it a non-zero scale.")
    c2w = np.eye(4)
    c2w[:3, :3] = R / norms
    c2w[:3, 3] = M[:3, 3]
    c2w = c2w @ BLENDER_TO_OPENCV
    return np.linalg.inv(c2w)


def blender_matrix_world_from_viewmat(viewmat: np.ndarray) -> np.ndarray:
    """Inverse of :func:`viewmat_from_blender_matrix_world` (unit scale)."""
    return np.linalg.inv(np.asarray(viewmat, dtype=np.float64)) @ BLENDER_TO_OPENCV


def render_size(resolution_x: int, resolution_y: int, percentage: int = 100) -> tuple[int, int]:
    """Pixel size of a render, as Blender computes it (``resolution * percentage / 100``)."""
    w = int(resolution_x * percentage / 100)
    h = int(resolution_y * percentage / 100)
    if w < 1 or h < 1:
        raise NearError(f"Render size {w}x{h} is empty; raise the resolution or its percentage.")
    return w, h


def _view_plane(
    sensor_fit: str,
    sensor_width: float,
    sensor_height: float,
    width: int,
    height: int,
    pixel_aspect_x: float,
    pixel_aspect_y: float,
) -> tuple[float, float, float]:
    """Blender's (sensor size, viewfac, ycor) for a render of ``width`` x ``height``."""
    if pixel_aspect_x <= 0 or pixel_aspect_y <= 0:
        raise NearError("Pixel aspect must be positive.")
    ycor = pixel_aspect_y / pixel_aspect_x
    fit = sensor_fit.upper()
    if fit == "AUTO":
        sensor = sensor_width
        fit = "HORIZONTAL" if pixel_aspect_x * width >= pixel_aspect_y * height else "VERTICAL"
    elif fit == "HORIZONTAL":
        sensor = sensor_width
    elif fit == "VERTICAL":
        sensor = sensor_height
    else:
        raise NearError(f"Unknown sensor fit {sensor_fit!r}; expected AUTO, HORIZONTAL or VERTICAL.")
    viewfac = float(width) if fit == "HORIZONTAL" else ycor * height
    return sensor, viewfac, ycor


def perspective_intrinsics(
    lens: float, sensor_width: float, sensor_height: float, sensor_fit: str, width: int, height: int,
    shift_x: float = 0.0, shift_y: float = 0.0, pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """K [3, 3] of a Blender PERSP camera (lens and sensor in mm, size in pixels)."""
    if lens <= 0:
        raise NearError(f"Camera focal length must be positive, got {lens} mm.")
    sensor, viewfac, ycor = _view_plane(
        sensor_fit, sensor_width, sensor_height, width, height, pixel_aspect_x, pixel_aspect_y
    )
    fx = lens / sensor * viewfac
    fy = fx / ycor
    cx = width / 2.0 - shift_x * viewfac
    cy = height / 2.0 + shift_y * viewfac / ycor
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def orthographic_intrinsics(
    ortho_scale: float, sensor_fit: str, width: int, height: int, shift_x: float = 0.0,
    shift_y: float = 0.0, pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """K [3, 3] of a Blender ORTHO camera: fx in pixels per metre, ``u = fx * x + cx``."""
    if ortho_scale <= 0:
        raise NearError(f"Orthographic scale must be positive, got {ortho_scale}.")
    # The sensor size does not matter for ortho; only which axis the scale spans.
    _, viewfac, ycor = _view_plane(sensor_fit, 1.0, 1.0, width, height, pixel_aspect_x, pixel_aspect_y)
    fx = viewfac / ortho_scale
    fy = fx / ycor
    cx = width / 2.0 - shift_x * viewfac
    cy = height / 2.0 + shift_y * viewfac / ycor
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def camera_from_blender_params(
    matrix_world: Any, *, type: str, width: int, height: int,  # noqa: A002 - Blender's name
    lens: float = 50.0, sensor_width: float = 36.0, sensor_height: float = 24.0, sensor_fit: str = "AUTO",
    shift_x: float = 0.0, shift_y: float = 0.0, ortho_scale: float = 6.0,
    clip_start: float = 0.1, clip_end: float = 1000.0,
    pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0, name: str = "Camera",
) -> Camera:  # fmt: skip
    """The stack's :class:`Camera` from the values of a Blender camera (``bpy.types.Camera``)."""
    viewmat = viewmat_from_blender_matrix_world(matrix_world)
    kind = type.upper()
    if kind == "PERSP":
        K = perspective_intrinsics(
            lens, sensor_width, sensor_height, sensor_fit, width, height,
            shift_x, shift_y, pixel_aspect_x, pixel_aspect_y,
        )  # fmt: skip
        model: CameraModel = "pinhole"
    elif kind == "ORTHO":
        K = orthographic_intrinsics(
            ortho_scale, sensor_fit, width, height, shift_x, shift_y, pixel_aspect_x, pixel_aspect_y
        )
        model = "ortho"
    elif kind == "PANO":
        raise NearError(
            f"Camera {name!r} is panoramic (PANO), which NeAR does not support; "
            "set the camera type to Perspective or Orthographic."
        )
    else:
        raise NearError(f"Camera {name!r} has unknown type {type!r}.")
    if clip_start <= 0 or clip_end <= clip_start:
        raise NearError(f"Camera {name!r} has invalid clipping ({clip_start}, {clip_end}).")
    return Camera(viewmat, K, width, height, float(clip_start), float(clip_end), model, {"name": name})


def camera_from_view_matrices(view_matrix: Any, window_matrix: Any, width: int, height: int) -> Camera:
    """The stack's :class:`Camera` from an OpenGL view and projection matrix.

    This is what the 3D viewport gives (``RegionView3D.view_matrix`` / ``.window_matrix`` and the
    region size); it also accepts ``camera.matrix_world.inverted()`` with
    ``camera.calc_matrix_camera(...)``. The projection decides pinhole vs ortho (``P[3, 3]``).
    """
    V = np.array(view_matrix, dtype=np.float64).reshape(4, 4)
    P = np.array(window_matrix, dtype=np.float64).reshape(4, 4)
    viewmat = BLENDER_TO_OPENCV @ V
    w, h = float(width), float(height)
    if abs(P[3, 3]) < 0.5:  # perspective: P[3] = (0, 0, -1, 0)
        fx, fy = w / 2 * P[0, 0], h / 2 * P[1, 1]
        cx, cy = w / 2 * (1 - P[0, 2]), h / 2 * (1 + P[1, 2])
        near = P[2, 3] / (P[2, 2] - 1.0)
        far = P[2, 3] / (P[2, 2] + 1.0)
        model: CameraModel = "pinhole"
    else:  # orthographic
        fx, fy = w / 2 * P[0, 0], h / 2 * P[1, 1]
        cx, cy = w / 2 * (1 + P[0, 3]), h / 2 * (1 - P[1, 3])
        near = (P[2, 3] + 1.0) / P[2, 2]
        far = (P[2, 3] - 1.0) / P[2, 2]
        model = "ortho"
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return Camera(viewmat, K, int(width), int(height), float(near), float(far), model)


# ---------------------------------------------------------------------------------------------
# Cameras made by the stack (datasets, demos)
# ---------------------------------------------------------------------------------------------


def look_at(eye: Any, target: Any = (0.0, 0.0, 0.0), up: Any = (0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV world-to-camera [4, 4] for a camera at ``eye`` looking at ``target`` (world Z up)."""
    eye = np.asarray(eye, dtype=np.float64)
    f = np.asarray(target, dtype=np.float64) - eye
    n = np.linalg.norm(f)
    if n < 1e-12:
        raise NearError("look_at: the eye and the target coincide.")
    f /= n
    up = np.asarray(up, dtype=np.float64)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-9:  # looking straight along `up`: pick any perpendicular
        r = np.cross(f, np.array([0.0, 1.0, 0.0]) if abs(f[1]) < 0.9 else np.array([1.0, 0.0, 0.0]))
    r /= np.linalg.norm(r)
    d = np.cross(f, r)  # camera +y (down)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = r, d, f, eye
    return np.linalg.inv(c2w)


def intrinsics_from_fov(fov_deg: float, width: int, height: int, axis: str = "x") -> np.ndarray:
    """Pinhole K with the given full field of view (degrees) along the larger or named axis."""
    span = width if axis == "x" else height
    f = span / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def orbit_camera(
    azimuth_deg: float,
    elevation_deg: float,
    radius: float,
    fov_deg: float,
    width: int,
    height: int,
    target: Any = (0.0, 0.0, 0.0),
    near: float = 0.01,
    far: float = 100.0,
) -> Camera:
    """A pinhole camera on a sphere around ``target`` (azimuth from +X toward +Y, Z up)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = np.asarray(target, dtype=np.float64) + radius * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )
    return Camera(look_at(eye, target), intrinsics_from_fov(fov_deg, width, height), width, height, near, far)


def stack_cameras(cameras: list[Camera], device: Any = None, dtype: Any = None) -> tuple[Any, Any]:
    """(viewmats [C, 4, 4], Ks [C, 3, 3]) torch tensors for a list of same-size cameras."""
    import torch

    dtype = dtype or torch.float32
    vm = torch.as_tensor(np.stack([c.viewmat for c in cameras]), dtype=dtype, device=device)
    Ks = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=dtype, device=device)
    return vm, Ks
