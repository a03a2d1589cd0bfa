"""Blender side of the evaluation's baked-texture baseline (a); see ``near_blender.eval.baked``.

Per asset: rebuild it exactly as ``near datagen`` did (same source, same normalization, checked
against ``asset.json``), give every surface one camera-projector material, then for each input view
load its image as the texture and render each target view under its lighting with the dataset's
render settings. Renders are written atomically as view files holding ``rgba``; finished ones are
skipped, so an interrupted job resumes.

The projector is exact per pixel: an Empty carries the input camera's OpenCV camera-to-world
matrix, the Texture Coordinate node's Object output is then the shading point in that camera's
frame ``(x, y, z)``, and the texture is looked up at ``u = (fx x / z + cx) / W``,
``v = 1 - (fy y / z + cy) / H`` (Blender images have row 0 at the bottom). Orthographic cameras
skip the division.

Events (``NEAR_EVENT`` lines): ``start`` (renders), ``render`` (id, file), ``asset`` (id, status,
error?), ``end`` (done, failed, seconds).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from near_blender import NearError
from near_blender.data.config import DatagenConfig
from near_blender.data.views import read_view, write_view
from near_blender.eval.baked import projector_texture
from near_blender.render.camera import Camera
from near_blender.utils.atomic import TMP_MARKER

from .assets import build_procedural, import_file, normalize
from .lighting import Lighting, load_envmaps
from .render import configure_scene, ensure_camera, place_camera, render_view

MATERIAL = "NeAR baked texture"


def rebuild_asset(scene: Any, asset: dict[str, Any]) -> list[Any]:
    """The asset's objects in ``scene``, normalized as in its ``asset.json`` record."""
    src = asset["source"]
    kind = src.get("kind")
    if kind == "procedural":
        objects = build_procedural(src["spec"], scene, asset["id"])
    elif kind == "file":
        if not Path(src["path"]).is_file():
            raise NearError(
                f"the asset file {src['path']} is gone; the baked baseline rebuilds the asset from it."
            )
        objects = import_file(src["path"], scene)
    else:
        raise NearError(
            f"the asset was made from Blender objects ({src.get('label')}); the baked baseline can only "
            "rebuild procedural and file assets."
        )
    record, _ = normalize(objects, scene, src.get("label", asset["id"]))
    want = np.asarray(asset["normalization"]["matrix"], np.float64)
    if not np.allclose(np.asarray(record["matrix"]), want, atol=1e-5):
        raise NearError("the rebuilt asset is not the one the dataset rendered (normalization differs).")
    return objects


def projector_material(image: Any, projector: Any) -> Any:
    """A Principled BSDF (Blender's defaults) whose base colour is ``image`` projected from the
    ``projector`` Empty; the intrinsics live in the Math nodes named ``u`` and ``v``."""
    mat = bpy.data.materials.get(MATERIAL) or bpy.data.materials.new(MATERIAL)
    mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    coord = nt.nodes.new("ShaderNodeTexCoord")
    coord.object = projector
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    nt.links.new(coord.outputs["Object"], sep.inputs[0])
    uv = []
    for axis, name in ((0, "u"), (1, "v")):
        div = nt.nodes.new("ShaderNodeMath")
        div.name = f"{name} / z"
        div.operation = "DIVIDE"
        nt.links.new(sep.outputs[axis], div.inputs[0])
        nt.links.new(sep.outputs[2], div.inputs[1])
        lin = nt.nodes.new("ShaderNodeMath")
        lin.name = name
        lin.operation = "MULTIPLY_ADD"
        nt.links.new(div.outputs[0], lin.inputs[0])
        uv.append(lin)
    comb = nt.nodes.new("ShaderNodeCombineXYZ")
    nt.links.new(uv[0].outputs[0], comb.inputs[0])
    nt.links.new(uv[1].outputs[0], comb.inputs[1])
    tex = nt.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    tex.extension = "EXTEND"
    nt.links.new(comb.outputs[0], tex.inputs["Vector"])
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def aim_projector(mat: Any, projector: Any, camera: Camera) -> None:
    """Place the projector at ``camera`` (OpenCV camera-to-world) and set its intrinsics."""
    projector.matrix_world = Matrix(camera.c2w.tolist())
    nt = mat.node_tree
    W, H, K = camera.width, camera.height, camera.K
    for name in ("u / z", "v / z"):  # an orthographic camera does not divide by depth
        nt.nodes[name].mute = camera.model == "ortho"
    u, v = nt.nodes["u"], nt.nodes["v"]
    u.inputs[1].default_value, u.inputs[2].default_value = K[0, 0] / W, K[0, 2] / W
    v.inputs[1].default_value, v.inputs[2].default_value = -K[1, 1] / H, 1.0 - K[1, 2] / H


def set_texture(image: Any, colour: np.ndarray) -> None:
    """Fill a float image with ``colour`` ``[H, W, 3]`` (row 0 at the top), alpha 1."""
    H, W = colour.shape[:2]
    if tuple(image.size) != (W, H):
        image.scale(W, H)
    rgba = np.concatenate([colour, np.ones((H, W, 1), np.float32)], axis=-1)
    image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1], np.float32).ravel())
    image.update()


def apply_material(objects: list[Any], mat: Any) -> None:
    """``mat`` as the only material of every object of the asset (and of its children)."""
    seen: set[str] = set()
    stack = list(objects)
    while stack:
        o = stack.pop()
        stack += list(o.children)
        data = getattr(o, "data", None)
        if data is None or not hasattr(data, "materials") or data.name in seen:
            continue
        seen.add(data.name)
        data.materials.clear()
        data.materials.append(mat)


class BakedJob:
    """One job file of ``near_blender.eval.baked`` (every asset, every pending render)."""

    def __init__(self, job: dict[str, Any], threads: int = 0) -> None:
        self.job = job
        self.root = Path(job["dataset"])
        self.cfg = DatagenConfig.from_dict(job["config"])
        self.threads = threads

    def steps(self) -> Iterator[dict[str, Any]]:
        t0 = time.perf_counter()
        total = sum(len(a["items"]) for a in self.job["assets"])
        yield {"event": "start", "renders": total}
        envs = {e.name: e for e in load_envmaps(sorted((self.root / "envmaps").glob("*.exr")))}
        counts = {"done": 0, "failed": 0}
        for asset in self.job["assets"]:
            try:
                yield from self._asset(asset, envs)
                counts["done"] += 1
                yield {"event": "asset", "id": asset["id"], "status": "done"}
            except Exception as e:  # noqa: BLE001 -- reported per asset; the job goes on
                if not isinstance(e, NearError):
                    traceback.print_exc()
                counts["failed"] += 1
                msg = str(e) if isinstance(e, NearError) else f"internal error: {type(e).__name__}: {e}"
                yield {"event": "asset", "id": asset["id"], "status": "failed", "error": msg}
        yield {"event": "end", **counts, "seconds": round(time.perf_counter() - t0, 3)}

    def _asset(self, asset: dict[str, Any], envs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        objects = rebuild_asset(scene, asset)
        configure_scene(scene, self.cfg, self.threads)
        cam_obj = ensure_camera(scene)
        projector = bpy.data.objects.new("NeAR projector", None)
        scene.collection.objects.link(projector)
        image = bpy.data.images.new("NeAR baked input", 8, 8, alpha=True, float_buffer=True)
        mat = projector_material(image, projector)
        apply_material(objects, mat)
        lighting = Lighting(scene, envs)
        adir = self.root / "assets" / asset["id"]
        current = None
        try:
            for it in asset["items"]:
                out = Path(it["out"])
                if out.is_file():
                    continue
                if it["input_file"] != current:
                    rgba = read_view(adir / it["input_file"])["rgba"]
                    set_texture(image, projector_texture(rgba))
                    aim_projector(mat, projector, Camera.from_dict(it["input_camera"]))
                    current = it["input_file"]
                lighting.apply(it["lighting"])
                place_camera(Camera.from_dict(it["camera"]), cam_obj, scene)
                out.parent.mkdir(parents=True, exist_ok=True)
                passes = render_view(scene, out.parent / f"{TMP_MARKER}render-{os.getpid()}.exr")
                write_view(out, {"rgba": passes["Combined"]})
                yield {"event": "render", "id": asset["id"], "file": str(out)}
        finally:
            lighting.close()


def run_job_file(path: str, progress: str = "json") -> int:
    """Headless entry (``headless.py baked --job PATH``): run the job, print its events."""
    job = json.loads(Path(path).read_text())
    for ev in BakedJob(job).steps():
        if progress == "json":
            print("NEAR_EVENT " + json.dumps(ev), flush=True)
        elif ev["event"] == "asset" and ev["status"] == "failed":
            print(f"{ev['id']}: {ev['error']}", flush=True)
    return 0
