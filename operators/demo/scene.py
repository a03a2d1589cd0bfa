"""Scene building shared by the engine benchmark and the demo: a studio-HDRI world, a camera, a
procedural mesh (the EEVEE reference) and the NeAR asset that stands for it."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from near_blender.render.camera import Camera

PACKAGE = __package__.rsplit(".", 2)[0]  # the extension package (near_addon, or bl_ext....)


def _mod(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def studio_hdri_path(name: str) -> Path:
    """One of Blender's bundled studio HDRIs (``studio``, ``forest``, ``city``, ...), or ``name``
    itself when it is the path of an .hdr / .exr file."""
    if Path(name).suffix.lower() in (".hdr", ".exr"):
        return Path(name)
    return Path(bpy.utils.system_resource("DATAFILES")) / "studiolights" / "world" / f"{name}.exr"


def hdri_world(scene: Any, name: str = "studio", rotation_deg: float = 0.0, strength: float = 1.0) -> Any:
    """Give ``scene`` a world lit by a bundled HDRI (or an HDRI file, :func:`studio_hdri_path`) through
    Texture Coordinate -> Mapping (Z rotation)."""
    world = bpy.data.worlds.new(f"HDRI {Path(name).stem}")
    scene.world = world
    nt = world.node_tree
    bg = nt.nodes["Background"]
    bg.inputs["Strength"].default_value = strength
    tex = nt.nodes.new("ShaderNodeTexEnvironment")
    tex.name = "Environment"
    tex.image = bpy.data.images.load(str(studio_hdri_path(name)), check_existing=True)
    coord, mapping = nt.nodes.new("ShaderNodeTexCoord"), nt.nodes.new("ShaderNodeMapping")
    mapping.name = "Mapping"
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(rotation_deg))
    nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    nt.links.new(tex.outputs["Color"], bg.inputs["Color"])
    return world


def set_hdri(world: Any, name: str, rotation_deg: float | None = None) -> None:
    """Swap the HDRI (and optionally the Mapping rotation) of a world made by :func:`hdri_world`."""
    nt = world.node_tree
    nt.nodes["Environment"].image = bpy.data.images.load(str(studio_hdri_path(name)), check_existing=True)
    if rotation_deg is not None:
        nt.nodes["Mapping"].inputs["Rotation"].default_value = (0.0, 0.0, math.radians(rotation_deg))


def camera_object(scene: Any, camera: Camera, name: str = "Camera") -> Any:
    """The scene's active camera object, set to render exactly ``camera``."""
    obj = scene.camera
    if obj is None:
        obj = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        scene.collection.objects.link(obj)
        scene.camera = obj
    _mod("engine.scene_bridge").apply_camera(camera, obj, scene)
    return obj


def procedural_mesh(scene: Any, spec: dict[str, Any], name: str = "asset") -> tuple[list[Any], np.ndarray]:
    """A library asset (spec of :mod:`near_blender.data.procedural`) normalized into [-0.5, 0.5]^3;
    returns (its objects, its world-space triangles)."""
    assets = _mod("operators.datagen.assets")
    objs = assets.build_procedural(spec, scene, name)
    _, tris = assets.normalize(objs, scene, name)
    return objs, tris


def near_asset(
    context: Any,
    tris: np.ndarray,
    sidecar: Path,
    feats: np.ndarray | None = None,
    channels: int = 16,
    seed: int = 0,
) -> tuple[Any, np.ndarray]:
    """A NeAR asset placed on the mesh given by ``tris``: its voxels, and ``feats`` (or seeded random
    features of ``channels``) written to ``sidecar``. Returns (the asset object, its voxel coords)."""
    from near_blender.data.slat_io import save_slat_npz

    imp = _mod("operators.import_image")
    coords, matrix = imp.voxelize_prior(tris)
    if feats is None:
        feats = np.random.default_rng(seed).normal(size=(len(coords), channels)).astype(np.float32)
    save_slat_npz(sidecar, coords, feats)
    rel = bpy.path.relpath(str(sidecar)) if bpy.data.filepath else str(sidecar)
    obj = imp.create_asset_object(context, sidecar.name.split(".")[0], rel, matrix, "")
    return obj, coords


def model_channels(model_folder: str | Path) -> int:
    """Channels of the LH-SLAT a pipeline folder's stage 2 expects."""
    import json

    data = json.loads((Path(model_folder) / "pipeline.json").read_text())
    args = data.get("args", data)
    norm = (args.get("stage2") or {}).get("slat_normalization")
    return len(norm["mean"]) if norm else 16


# The benchmarks' asset: a textured subdivided Suzanne (procedural, so no file is needed).
BENCH_SPEC = (
    "proc:subdiv_suzanne,base_color=0.8/0.5/0.2,color2=0.1/0.2/0.7,texture=noise,roughness=0.4,metallic=0"
)


def bench_scene(
    model: str | Path, hdri: str, prefix: str, near_only: bool = False
) -> tuple[Any, list[Any], np.ndarray, Any, np.ndarray, Path]:
    """The benchmarks' scene from factory settings, saved in a new temporary folder: a studio HDRI
    world, the Suzanne mesh (:data:`BENCH_SPEC`) and its NeAR asset with random features of the
    model's channels. ``near_only``: the NEAR engine renders it and the mesh is hidden from renders.
    Returns (scene, mesh objects, triangles, asset object, voxel coords, folder)."""
    import tempfile

    from near_blender.data.procedural import parse_procedural_spec

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp / "bench.blend"))
    hdri_world(scene, hdri)
    objs, tris = procedural_mesh(scene, parse_procedural_spec(BENCH_SPEC), "suzanne")
    asset, coords = near_asset(bpy.context, tris, tmp / "suzanne.near.npz", channels=model_channels(model))
    if near_only:
        for o in objs:
            o.hide_render = True
        scene.render.engine = "NEAR"
    return scene, objs, tris, asset, coords, tmp
