"""Seeded cameras and lights for the training data (paper 4.1, TRELLIS conventions), bpy-free.

Conventions: Blender world (Z up, metres); assets fill [-0.5, 0.5]^3; cameras look at the origin.
Angles follow :func:`near_blender.render.camera.orbit_camera`: azimuth (yaw) from +X toward +Y,
elevation (pitch) above the XY plane; a camera sits at ``r (cos p cos y, cos p sin y, sin p)`` (as
TRELLIS's Blender script places it). FOV is the full horizontal angle of a square image.

Render sets (one render per view and lighting, all passes at once):

* ``homog``  -- stage-1 feature views under the homogenized light, a uniform white world of
  radiance 1 (paper 3.3): TRELLIS's ``render.py`` cameras, a Hammersley sphere with a random
  offset, radius 2, FOV 40 deg.
* ``shaded`` -- the same Hammersley cameras (same offset, so with equal counts the very same
  cameras) under TRELLIS's fixed three-light rig: the views TRELLIS extracts its SLAT from.
* ``cond``   -- TRELLIS's ``render_cond.py`` cameras under the rig (conditioning images for a base
  image-to-SLAT flow): Hammersley with its own offset; ``1 / r^2`` uniform between the radii at
  which the asset's bounding sphere (radius sqrt(3)/2) fills a FOV of 70 and 10 deg, and
  ``fov = 2 asin(sqrt(3) / 2 / r)`` (so the bounding sphere always exactly fills the frame).
* ``inputs`` -- stage-1 input images (paper 4.1): yaw uniform within +-45 deg of the asset's front
  (``input_yaw_center_deg``, default -90 = the -Y side: glTF/Objaverse assets face +Z, which
  Blender's importers turn into -Y), pitch uniform in [-10, 45] deg, FOV/radius as ``cond``; the
  lighting is one of three modes with equal probability: ``six_area`` (six area lights on the
  vertices of a randomly rotated octahedron, i.e. uniformly spread on a sphere), ``hemisphere_area``
  (1-3 area lights uniform on the hemisphere facing the camera), ``envmap`` (a random map of the
  pool, Z-rotated uniformly). Area lights: power uniform in [300, 700] W, distance uniform in
  [5, 8] m, square of ``area_light_size`` m, aimed at the origin; black world.
* ``relit`` -- stage-2 views (paper 4.1): uniform random directions on a sphere of radius 2,
  FOV 40 deg; each view under ``relit_lights`` environment maps drawn from the pool with a uniform
  Z rotation (Mapping-node convention of :mod:`near_blender.render.envmap`).
* ``relit_holdout`` -- the ``relit`` cameras under each held-out map (one random rotation each).
* ``inputs_holdout`` -- the ``inputs`` cameras under each held-out map (one random rotation each):
  the ground truth of single-image relighting (an input image relit to a new map, same view).

Randomness: every view draws from its own generator seeded by (seed, asset id, set, index), so
shards and resumed runs reproduce exactly and adding views never changes earlier ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import NearError
from ..render.camera import Camera, intrinsics_from_fov, look_at
from .config import DatagenConfig
from .layout import is_held_out

SETS = ("homog", "shaded", "cond", "inputs", "inputs_holdout", "relit", "relit_holdout")
INPUT_MODES = ("six_area", "hemisphere_area", "envmap")

FEATURE_RADIUS = 2.0
FEATURE_FOV_DEG = 40.0
COND_FOV_RANGE_DEG = (10.0, 70.0)
BOUNDING_RADIUS = math.sqrt(3.0) / 2.0  # of the [-0.5, 0.5]^3 cube
INPUT_YAW_HALF_RANGE_DEG = 45.0
INPUT_PITCH_RANGE_DEG = (-10.0, 45.0)
AREA_POWER_RANGE_W = (300.0, 700.0)
AREA_DISTANCE_RANGE = (5.0, 8.0)
CAMERA_NEAR, CAMERA_FAR = 0.01, 100.0

# Blender's default world colour (linear), which TRELLIS's renders keep behind its rig.
DEFAULT_WORLD_GREY = 0.050876

# TRELLIS dataset_toolkits/blender_script/render.py, init_lighting(): a 1000 W point light at
# (4, 1, 6); a 10000 W area light of size 1 scaled by 100 at (0, 0, 10) facing down; a 1000 W
# area light of size 1 at (0, 0, -10) with no rotation, i.e. also facing down, away from the
# object (kept as TRELLIS has it). Blender area lights emit along their local -Z.
TRELLIS_RIG: tuple[dict[str, Any], ...] = (
    {"name": "Default_Light", "type": "POINT", "position": [4.0, 1.0, 6.0], "power_w": 1000.0, "radius_m": 0.25},
    {"name": "Top_Light", "type": "AREA", "position": [0.0, 0.0, 10.0], "direction": [0.0, 0.0, -1.0],
     "power_w": 10000.0, "size_m": 100.0},
    {"name": "Bottom_Light", "type": "AREA", "position": [0.0, 0.0, -10.0], "direction": [0.0, 0.0, -1.0],
     "power_w": 1000.0, "size_m": 1.0},
)  # fmt: skip


@dataclass(frozen=True)
class ViewTask:
    """One render: a camera, a lighting, the output file and the passes it keeps.

    ``lighting`` is JSON-ready: ``{"type": "uniform", "color", "strength"}``,
    ``{"type": "lights", "mode", "world_color", "lights": [...]}`` or
    ``{"type": "envmap", "mode", "envmap", "rotation_z", "strength"}``.
    """

    set: str
    index: int
    file: str
    camera: Camera
    params: dict[str, float]
    lighting: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Random streams and low-discrepancy sequences
# ---------------------------------------------------------------------------------------------


def stream_rng(seed: int, asset_id: str, *keys: Any) -> np.random.Generator:
    """A generator that depends only on (seed, asset id, keys) -- stable across processes."""
    text = "\x1f".join([str(int(seed)), asset_id, *map(str, keys)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    return np.random.default_rng(np.random.SeedSequence(words))


def radical_inverse(base: int, n: int) -> float:
    val, inv = 0.0, 1.0 / base
    f = inv
    while n > 0:
        val += (n % base) * f
        n //= base
        f *= inv
    return val


def hammersley_yaw_pitch(i: int, n: int, offset: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """TRELLIS's ``sphere_hammersley_sequence``: (yaw, pitch) in radians of point ``i`` of ``n``."""
    u = i / n + offset[0] / n
    v = radical_inverse(2, i) + offset[1]
    u = 2 * u if u < 0.25 else 2 / 3 * u + 1 / 3
    pitch = math.acos(1 - 2 * u) - math.pi / 2
    yaw = v * 2 * math.pi
    return yaw, pitch


def trellis_fov_radius(rng: np.random.Generator) -> tuple[float, float]:
    """(fov_deg, radius) of a TRELLIS conditioning camera: 1/r^2 uniform, bounding sphere fills FOV."""
    lo, hi = COND_FOV_RANGE_DEG
    r_min = BOUNDING_RADIUS / math.sin(math.radians(hi) / 2)
    r_max = BOUNDING_RADIUS / math.sin(math.radians(lo) / 2)
    k = rng.uniform(1 / r_max**2, 1 / r_min**2)
    r = 1 / math.sqrt(k)
    return math.degrees(2 * math.asin(BOUNDING_RADIUS / r)), r


def uniform_sphere(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Unit vectors uniform on the sphere, [3] or [n, 3]."""
    z = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2 * math.pi, n)
    s = np.sqrt(1 - z * z)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=-1)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 float64 rotation (Haar measure): a unit quaternion (w, x, y, z) from 4
    normal draws of ``rng``, turned into a matrix by :func:`near_blender.render.quaternion.quat_to_rotmat`
    in float64 (the same numbers, bit for bit, as the explicit formula used before)."""
    import torch  # lazily: the rest of this module is numpy only

    from ..render.quaternion import quat_to_rotmat

    q = rng.normal(size=4)
    return quat_to_rotmat(torch.from_numpy(q / np.linalg.norm(q))).numpy()


# ---------------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------------


def make_camera(yaw_deg: float, pitch_deg: float, radius: float, fov_deg: float, resolution: int) -> Camera:
    """A square pinhole camera on the orbit (yaw, pitch, radius) looking at the origin."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    eye = radius * np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), math.sin(p)])
    K = intrinsics_from_fov(fov_deg, resolution, resolution)
    return Camera(look_at(eye), K, resolution, resolution, CAMERA_NEAR, CAMERA_FAR)


def _params(yaw: float, pitch: float, radius: float, fov: float) -> dict[str, float]:
    return {"yaw_deg": float(yaw), "pitch_deg": float(pitch), "radius": float(radius), "fov_deg": float(fov)}


def _hammersley_angles(seed: int, asset_id: str, stream: str, n: int) -> list[tuple[float, float]]:
    """(yaw_deg, pitch_deg) of an ``n``-point Hammersley sphere with a seeded random offset."""
    rng = stream_rng(seed, asset_id, stream)
    offset = (float(rng.uniform()), float(rng.uniform()))
    return [tuple(math.degrees(a) for a in hammersley_yaw_pitch(i, n, offset)) for i in range(n)]


def feature_view_params(seed: int, asset_id: str, n: int) -> list[dict[str, float]]:
    """``homog`` / ``shaded`` camera parameters: Hammersley, radius 2, FOV 40 (TRELLIS render.py)."""
    angles = _hammersley_angles(seed, asset_id, "feature_views", n)
    return [_params(yaw, pitch, FEATURE_RADIUS, FEATURE_FOV_DEG) for yaw, pitch in angles]


def cond_view_params(seed: int, asset_id: str, n: int) -> list[dict[str, float]]:
    """``cond`` camera parameters (TRELLIS render_cond.py)."""
    out = []
    for i, (yaw, pitch) in enumerate(_hammersley_angles(seed, asset_id, "cond_views", n)):
        fov, r = trellis_fov_radius(stream_rng(seed, asset_id, "cond", i))
        out.append(_params(yaw, pitch, r, fov))
    return out


def input_view_params(rng: np.random.Generator, yaw_center_deg: float) -> dict[str, float]:
    """A stage-1 input camera: yaw +-45 deg around the front, pitch -10..45 deg, TRELLIS FOV/radius."""
    yaw = yaw_center_deg + rng.uniform(-INPUT_YAW_HALF_RANGE_DEG, INPUT_YAW_HALF_RANGE_DEG)
    pitch = rng.uniform(*INPUT_PITCH_RANGE_DEG)
    fov, r = trellis_fov_radius(rng)
    return _params(yaw, pitch, r, fov)


def relit_view_params(rng: np.random.Generator) -> dict[str, float]:
    """A stage-2 camera: uniform direction on the sphere, radius 2, FOV 40."""
    d = uniform_sphere(rng)
    yaw = math.degrees(math.atan2(d[1], d[0]))
    pitch = math.degrees(math.asin(float(np.clip(d[2], -1.0, 1.0))))
    return _params(yaw, pitch, FEATURE_RADIUS, FEATURE_FOV_DEG)


# ---------------------------------------------------------------------------------------------
# Lights
# ---------------------------------------------------------------------------------------------


def _area_light(rng: np.random.Generator, direction: np.ndarray, size: float) -> dict[str, Any]:
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    dist = float(rng.uniform(*AREA_DISTANCE_RANGE))
    power = float(rng.uniform(*AREA_POWER_RANGE_W))
    pos = d * dist
    return {
        "type": "AREA",
        "position": pos.tolist(),
        "direction": (-d).tolist(),  # emission axis (the light's local -Z), toward the origin
        "power_w": power,
        "distance": dist,
        "size_m": float(size),
    }


def six_area_lights(rng: np.random.Generator, size: float) -> list[dict[str, Any]]:
    """Mode 1: six area lights on the vertices of a randomly rotated octahedron."""
    R = random_rotation(rng)
    dirs = np.concatenate([np.eye(3), -np.eye(3)]) @ R.T
    return [_area_light(rng, d, size) for d in dirs]


def hemisphere_area_lights(
    rng: np.random.Generator, camera_dir: np.ndarray, size: float
) -> list[dict[str, Any]]:
    """Mode 2: 1-3 area lights uniform on the hemisphere around ``camera_dir`` (origin -> camera)."""
    c = np.asarray(camera_dir, dtype=np.float64)
    c = c / np.linalg.norm(c)
    n = int(rng.integers(1, 4))
    out = []
    for _ in range(n):
        d = uniform_sphere(rng)
        if d @ c < 0:
            d = -d
        out.append(_area_light(rng, d, size))
    return out


def envmap_lighting(rng: np.random.Generator, pool: list[str], mode: str) -> dict[str, Any]:
    """A random map of ``pool`` with a uniform Z rotation in [0, 2 pi)."""
    if not pool:
        raise NearError("No usable environment maps: every --envmaps file failed to load (see the manifest).")
    name = pool[int(rng.integers(len(pool)))]
    return {"type": "envmap", "mode": mode, "envmap": name, "rotation_z": float(rng.uniform(0, 2 * math.pi)),
            "strength": 1.0}  # fmt: skip


def input_lighting(
    rng: np.random.Generator, camera_dir: np.ndarray, pool: list[str], size: float
) -> dict[str, Any]:
    """One of the paper's three random lighting modes (equal probability)."""
    mode = INPUT_MODES[int(rng.integers(3))]
    if mode == "six_area":
        return {
            "type": "lights",
            "mode": mode,
            "world_color": [0.0, 0.0, 0.0],
            "lights": six_area_lights(rng, size),
        }
    if mode == "hemisphere_area":
        lights = hemisphere_area_lights(rng, camera_dir, size)
        return {"type": "lights", "mode": mode, "world_color": [0.0, 0.0, 0.0], "lights": lights}
    return envmap_lighting(rng, pool, mode)


HOMOGENIZED = {"type": "uniform", "mode": "homogenized", "color": [1.0, 1.0, 1.0], "strength": 1.0}
RIG = {
    "type": "lights",
    "mode": "trellis_rig",
    "world_color": [DEFAULT_WORLD_GREY] * 3,
    "lights": list(TRELLIS_RIG),
}


# ---------------------------------------------------------------------------------------------
# The plan of one asset
# ---------------------------------------------------------------------------------------------


def holdout_maps(asset_id: str, cfg: DatagenConfig, holdout: list[str]) -> list[str]:
    """The held-out maps whose views one asset gets: all of ``holdout`` for a held-out asset (or for
    every asset with ``cfg.holdout_renders == 'all'``), none for a training asset."""
    return list(holdout) if cfg.holdout_renders == "all" or is_held_out(asset_id) else []


def count_renders(cfg: DatagenConfig, n_holdout: int) -> int:
    """Number of renders :func:`plan_asset` makes for one asset (without building the plan) that
    gets ``n_holdout`` held-out maps (``len(holdout_maps(...))``)."""
    n = cfg.homog_views + cfg.shaded_views + cfg.cond_views + cfg.input_views * (1 + n_holdout)
    if cfg.relit_views and (cfg.relit_lights or n_holdout):
        n += cfg.relit_views * (cfg.relit_lights + n_holdout)
    return n


def plan_asset(asset_id: str, cfg: DatagenConfig, pool: list[str], holdout: list[str]) -> list[ViewTask]:
    """Every render of one asset, in render order (deterministic in (cfg, asset id, maps)).

    ``pool``: names of the environment maps the random lighting draws from (sorted);
    ``holdout``: names of the held-out maps (sorted), rendered as ``inputs_holdout`` and
    ``relit_holdout`` for the assets :func:`holdout_maps` gives them to.
    """
    res, seed = cfg.resolution, cfg.seed
    holdout = holdout_maps(asset_id, cfg, holdout)
    tasks: list[ViewTask] = []

    def add(
        set_name: str, i: int, file: str, p: dict[str, float], lighting: dict[str, Any], **meta: Any
    ) -> None:
        cam = make_camera(p["yaw_deg"], p["pitch_deg"], p["radius"], p["fov_deg"], res)
        tasks.append(ViewTask(set_name, i, file, cam, p, lighting, meta))

    for i, p in enumerate(feature_view_params(seed, asset_id, cfg.homog_views)):
        add("homog", i, f"homog/{i:03d}.exr", p, HOMOGENIZED)
    for i, p in enumerate(feature_view_params(seed, asset_id, cfg.shaded_views)):
        add("shaded", i, f"shaded/{i:03d}.exr", p, RIG)
    for i, p in enumerate(cond_view_params(seed, asset_id, cfg.cond_views)):
        add("cond", i, f"cond/{i:03d}.exr", p, RIG)
    for i in range(cfg.input_views):
        rng = stream_rng(seed, asset_id, "inputs", i)
        p = input_view_params(rng, cfg.input_yaw_center_deg)
        cam_dir = make_camera(p["yaw_deg"], p["pitch_deg"], 1.0, 40.0, 8).position
        add("inputs", i, f"inputs/{i:03d}.exr", p, input_lighting(rng, cam_dir, pool, cfg.area_light_size))
        for h, name in enumerate(holdout):
            light = envmap_lighting(
                stream_rng(seed, asset_id, "inputs_holdout", i, name), [name], "inputs_holdout"
            )
            add("inputs_holdout", i * len(holdout) + h, f"inputs_holdout/{i:03d}_{h:03d}.exr", p, light, view=i,
                light=h)  # fmt: skip
    if cfg.relit_views and (cfg.relit_lights or holdout):
        for v in range(cfg.relit_views):
            p = relit_view_params(stream_rng(seed, asset_id, "relit", v))
            for k in range(cfg.relit_lights):
                light = envmap_lighting(stream_rng(seed, asset_id, "relit", v, k), pool, "relit")
                add(
                    "relit", v * cfg.relit_lights + k, f"relit/{v:03d}_{k:03d}.exr", p, light, view=v, light=k
                )
            for h, name in enumerate(holdout):
                rng = stream_rng(seed, asset_id, "relit_holdout", v, name)
                light = envmap_lighting(rng, [name], "relit_holdout")
                add("relit_holdout", v * len(holdout) + h, f"relit_holdout/{v:03d}_{h:03d}.exr", p, light, view=v,
                    light=h)  # fmt: skip
    return tasks
