"""Lighting of the data renders: worlds, the TRELLIS rig, random area lights, environment maps.

Environment worlds use exactly the graph the scene bridge reads back
(``engine.scene_bridge.environment_from_world``): Texture Coordinate (Generated) -> Mapping
(Point, rotation about Z) -> Environment Texture (equirectangular) -> Background -> World Output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Vector

from near_blender import NearError
from near_blender.data.shadow import irradiance_map
from near_blender.data.sources import short_hash, slug
from near_blender.render.envmap import Environment, validate_radiance
from near_blender.render.exr import write_exr

from ...engine import scene_bridge

ENV_EXTENSIONS = (".exr", ".hdr")
_LIGHT_TAG = "near_datagen_light"


def studio_hdri_folder() -> Path:
    """Blender's bundled CC0 studio HDRIs (8 maps, 1024x512)."""
    return Path(bpy.utils.system_resource("DATAFILES")) / "studiolights" / "world"


def find_envmaps(items: list[str] | None) -> list[Path]:
    """Environment map files from ``--envmaps`` items (files or folders); default: the studio HDRIs."""
    if items is None:
        items = [str(studio_hdri_folder())]
    out: list[Path] = []
    for it in items:
        p = Path(it).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in ENV_EXTENSIONS)
        else:
            out.append(p)
    return out


@dataclass
class EnvMap:
    """One environment map of the pool: validated pixels (or the reason it is unusable)."""

    name: str
    path: Path
    radiance: np.ndarray | None = None
    error: str | None = None
    _irradiance: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def environment(self, rotation_z: float = 0.0, strength: float = 1.0) -> Environment:
        env = Environment(self.radiance, rotation_z, self.name)
        return env.scaled(strength) if strength != 1.0 else env

    def irradiance(self) -> np.ndarray:
        """The (unrotated) irradiance map for the shadow pass, computed once."""
        if self._irradiance is None:
            self._irradiance = irradiance_map(self.radiance)
        return self._irradiance

    def manifest_entry(self) -> dict[str, Any]:
        e: dict[str, Any] = {
            "id": f"envmap:{self.name}",
            "kind": "envmap",
            "source": {"path": str(self.path)},
        }
        if self.ok:
            e.update(status="done", size=[int(self.radiance.shape[1]), int(self.radiance.shape[0])],
                     file=f"envmaps/{self.name}.exr", error=None)  # fmt: skip
        else:
            e.update(status="failed", error=self.error)
        return e


def load_envmaps(paths: list[Path]) -> list[EnvMap]:
    """Load and validate every map (a bad one is kept with its error; the batch goes on)."""
    names: dict[str, int] = {}
    out = []
    for p in paths:
        name = slug(p.stem, 60)
        if name in names:
            name = f"{name}-{short_hash(str(p))}"
        names[name] = 1
        env = EnvMap(name, p)
        try:
            env.radiance = _read_envmap_pixels(p)
        except NearError as e:
            env.error = str(e)
        out.append(env)
    return out


def _read_envmap_pixels(path: Path) -> np.ndarray:
    if not path.is_file():
        raise NearError(f"Environment map not found: {path}.")
    if path.suffix.lower() not in ENV_EXTENSIONS:
        raise NearError(f"Environment map {path.name}: use an equirectangular .exr or .hdr file.")
    try:
        img = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as e:
        raise NearError(f"Environment map {path.name} cannot be read ({e}); is the file complete?") from None
    try:
        if img.size[0] == 0 or img.size[1] == 0:
            raise NearError(f"Environment map {path.name} cannot be read (corrupt or not an image).")
        pixels = scene_bridge.image_pixels_linear(img, f"environment map {path.name}")
    finally:
        bpy.data.images.remove(img)
    # Tiny negative values of lossy encodings are clamped there; NaN / Inf are rejected.
    return validate_radiance(pixels, f"environment map {path.name}")


def export_envmaps(envs: list[EnvMap], folder: Path) -> None:
    """Write the usable maps into the dataset as float32 EXR (once; atomic)."""
    for env in envs:
        target = folder / f"{env.name}.exr"
        if env.ok and not target.exists():
            write_exr(target, env.radiance, half=False)


class Lighting:
    """Sets the world and lights of the asset scene for one render's lighting spec."""

    def __init__(self, scene: Any, envs: dict[str, EnvMap]) -> None:
        self.scene = scene
        self.envs = envs
        self.lights: list[Any] = []
        self._lights_key: str | None = None  # the light set now in the scene (kept between renders)

    # -- worlds ----------------------------------------------------------------------------------
    def _colour_world(self, name: str, colour: Any, strength: float) -> Any:
        key = json.dumps([list(colour), strength])
        world = bpy.data.worlds.get(name)
        if world is not None and world.get("near_params") == key:
            return world  # unchanged: no re-sync (EEVEE would re-bake its world probe)
        world = world or bpy.data.worlds.new(name)
        world["near_params"] = key
        nt = world.node_tree
        nt.nodes.clear()
        bg = nt.nodes.new("ShaderNodeBackground")
        out = nt.nodes.new("ShaderNodeOutputWorld")
        nt.links.new(bg.outputs["Background"], out.inputs["Surface"])
        bg.inputs["Color"].default_value = (*[float(c) for c in colour][:3], 1.0)
        bg.inputs["Strength"].default_value = float(strength)
        return world

    def _env_world(self, env: EnvMap, rotation_z: float, strength: float) -> Any:
        """The environment world, rebuilt for every render: a render then never depends on which
        renders came before it (so resumed runs reproduce uninterrupted ones bit for bit)."""
        world = bpy.data.worlds.get("NeAR environment") or bpy.data.worlds.new("NeAR environment")
        img = bpy.data.images.load(str(env.path), check_existing=True)
        nt = world.node_tree
        nt.nodes.clear()
        coord = nt.nodes.new("ShaderNodeTexCoord")
        mapping = nt.nodes.new("ShaderNodeMapping")
        mapping.vector_type = "POINT"
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, float(rotation_z))
        tex = nt.nodes.new("ShaderNodeTexEnvironment")
        tex.image = img
        tex.projection = "EQUIRECTANGULAR"
        bg = nt.nodes.new("ShaderNodeBackground")
        bg.inputs["Strength"].default_value = float(strength)
        out = nt.nodes.new("ShaderNodeOutputWorld")
        nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
        nt.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
        nt.links.new(tex.outputs["Color"], bg.inputs["Color"])
        nt.links.new(bg.outputs["Background"], out.inputs["Surface"])
        # Cycles' automatic importance map costs ~5 s per render on 2 cores (it is rebuilt whenever
        # the world changes); a fixed 512 map is ~0.2 s and still resolves a sun.
        world.cycles.sampling_method = "MANUAL"
        world.cycles.sample_map_resolution = 512
        return world

    # -- lights ----------------------------------------------------------------------------------
    def _clear_lights(self) -> None:
        self._lights_key = None
        for obj in self.lights:
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if data is not None and data.users == 0:
                bpy.data.lights.remove(data)
        self.lights = []

    def _add_light(self, spec: dict[str, Any], i: int) -> None:
        kind = spec["type"]
        data = bpy.data.lights.new(f"NeAR light {i}", kind)
        data.energy = float(spec["power_w"])
        if kind == "AREA":
            data.shape = "SQUARE"
            data.size = float(spec["size_m"])
        elif kind == "POINT":
            data.shadow_soft_size = float(spec.get("radius_m", 0.25))
        obj = bpy.data.objects.new(f"NeAR light {i}", data)
        obj[_LIGHT_TAG] = True
        obj.location = Vector(spec["position"])
        if "direction" in spec:  # Blender lights emit along their local -Z
            obj.rotation_mode = "QUATERNION"
            obj.rotation_quaternion = Vector(spec["direction"]).to_track_quat("-Z", "Y")
        obj.visible_camera = False
        self.scene.collection.objects.link(obj)
        self.lights.append(obj)

    # -- the one entry point ---------------------------------------------------------------------
    def apply(self, lighting: dict[str, Any]) -> Environment | None:
        """Set up ``lighting`` (a spec of ``near_blender.data.sampling``); returns the environment
        for env-lit renders (for the shadow pass), else None."""
        kind = lighting["type"]
        if kind == "lights":
            self.scene.world = self._colour_world("NeAR lights world", lighting["world_color"], 1.0)
            key = json.dumps(lighting["lights"], sort_keys=True)
            if key != self._lights_key:  # e.g. the rig stays for all shaded / cond views
                self._clear_lights()
                for i, spec in enumerate(lighting["lights"]):
                    self._add_light(spec, i)
                self._lights_key = key
            return None
        self._clear_lights()
        if kind == "uniform":
            self.scene.world = self._colour_world("NeAR uniform", lighting["color"], lighting["strength"])
            return None
        if kind == "envmap":
            env = self.envs.get(lighting["envmap"])
            if env is None or not env.ok:
                raise NearError(f"Environment map {lighting['envmap']!r} is not available.")
            world = self._env_world(env, float(lighting["rotation_z"]), float(lighting.get("strength", 1.0)))
            self.scene.world = world
            return env.environment(float(lighting["rotation_z"]), float(lighting.get("strength", 1.0)))
        raise NearError(f"Unknown lighting type {kind!r}.")

    def close(self) -> None:
        self._clear_lights()


def env_name_list(envs: list[EnvMap], holdout: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(random pool, held-out) names of the usable maps, each sorted."""
    ok = sorted(e.name for e in envs if e.ok)
    missing = [h for h in holdout if h not in {e.name for e in envs}]
    if missing:
        have = ", ".join(sorted(e.name for e in envs)) or "none"
        raise NearError(
            f"--holdout-envmaps {' '.join(missing)}: no such map among the environment maps ({have})."
        )
    return [n for n in ok if n not in holdout], [n for n in ok if n in holdout]
