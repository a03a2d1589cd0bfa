"""The data generator's job loop, shared by the headless script and the UI operator.

:class:`DatagenJob.steps` is a generator that renders one view per step and yields a progress
event after each (the headless script drains it; the modal operator advances it one step per
timer tick, so ESC can stop it between renders). Closing the generator leaves the dataset
resumable: finished views stay, the asset has no ``status.json`` yet.

Events: ``{"event": "start", "assets", "renders"}``, ``{"event": "envmap", ...}``,
``{"event": "render", "id", "file", "done", "total"}``,
``{"event": "asset", "id", "status": "done"|"failed"|"skipped", "error"?, "done", "total"}``,
``{"event": "end", "done", "failed", "skipped", "seconds"}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import time
import traceback
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from near_blender import NearError
from near_blender.data.config import DatagenConfig
from near_blender.data.features import get_extractor
from near_blender.data.layout import DONE, FAILED, RUN_KEY, Dataset, select_shard
from near_blender.data.sampling import ViewTask, count_renders, holdout_maps, plan_asset
from near_blender.data.shadow import shadow_from_passes
from near_blender.data.slatgen import build_slats, save_npz_atomic
from near_blender.data.sources import AssetSource
from near_blender.data.views import SET_PASSES, diffuse_light, view_from_passes, write_view
from near_blender.data.voxelize import voxelize_triangles
from near_blender.utils.atomic import TMP_MARKER, atomic_write_json

from .assets import build_procedural, copy_objects, import_file, normalize
from .lighting import EnvMap, Lighting, env_name_list, export_envmaps, load_envmaps
from .materials import ensure_materials, material_report
from .render import configure_scene, ensure_camera, place_camera, render_view

CAMERA_CONVENTION = (
    "camera: OpenCV world-to-camera 'viewmat' (x right, y down, z forward) and 'K' in pixels, pixel "
    "centres at +0.5, row 0 at the top; world = Blender's (Z up, metres). blender.matrix_world: the "
    "Blender camera object (looks down its -Z, +Y up); blender.projection: calc_matrix_camera (OpenGL)."
)


# ---------------------------------------------------------------------------------------------
# Where each asset is built
# ---------------------------------------------------------------------------------------------


class FactoryScenes:
    """Headless: every asset starts from Blender's empty factory scene (nothing leaks between assets)."""

    @contextlib.contextmanager
    def asset_scene(self) -> Iterator[Any]:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        yield bpy.context.scene


class TemporaryScenes:
    """UI: every asset is built in a new scene that is removed afterwards, together with every
    datablock created meanwhile; the artist's scenes, objects and materials are not touched."""

    KINDS = (
        "objects",
        "meshes",
        "materials",
        "worlds",
        "lights",
        "cameras",
        "images",
        "node_groups",
        "curves",
    )

    @contextlib.contextmanager
    def asset_scene(self) -> Iterator[Any]:
        before = {k: {i.as_pointer() for i in getattr(bpy.data, k)} for k in self.KINDS}
        scene = bpy.data.scenes.new("NeAR Datagen")
        try:
            yield scene
        finally:
            bpy.data.scenes.remove(scene)
            for k in self.KINDS:
                coll = getattr(bpy.data, k)
                for item in [i for i in coll if i.as_pointer() not in before[k]]:
                    coll.remove(item)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


@dataclass
class JobSpec:
    """What to generate and how to run (see ``near_blender.data.config`` for the options)."""

    out: Path
    config: DatagenConfig
    sources: list[AssetSource]
    envmap_paths: list[Path]
    shard: tuple[int, int] = (0, 1)
    resume: bool = False
    retry_failed: bool = False
    threads: int = 0


@dataclass
class _Stage:
    """The asset's current stage, named in its status when it fails."""

    name: str


@dataclass
class _Built:
    """What building and rendering an asset gave, for its files."""

    norm: dict[str, Any] = field(default_factory=dict)
    tris: Any = None
    coords: Any = None
    materials: Any = None
    cams: list[dict[str, Any]] = field(default_factory=list)
    lights: list[dict[str, Any]] = field(default_factory=list)


class DatagenJob:
    def __init__(self, spec: JobSpec, scenes: Any | None = None) -> None:
        self.spec = spec
        self.cfg = spec.config
        self.ds = Dataset(spec.out)
        self.scenes = scenes or FactoryScenes()
        i, n = spec.shard
        ids = select_shard([s.id for s in spec.sources], i, n)
        wanted = set(ids)
        self.sources = [s for s in spec.sources if s.id in wanted]
        self.envs: dict[str, EnvMap] = {}
        self.pool: list[str] = []
        self.holdout: list[str] = []
        self.done = 0
        self.total = 0
        self._in_manifest: set[str] = set()
        self.counts = {"done": 0, "failed": 0, "skipped": 0}

    # -- set-up --------------------------------------------------------------------------------------
    def _generation(self) -> dict[str, Any]:
        g = self.cfg.generation()
        ids = "\n".join(sorted(s.id for s in self.spec.sources))
        g["assets"] = {"count": len(self.spec.sources), "sha1": hashlib.sha1(ids.encode()).hexdigest()}
        g["envmaps"] = sorted(p.stem for p in self.spec.envmap_paths)
        return g

    def _check_fresh(self) -> None:
        busy = [s.id for s in self.sources if s.id in self._in_manifest or self.ds.has_work(s.id)]
        if busy:
            raise NearError(
                f"{self.ds.root} already holds {len(busy)} of these assets (e.g. {busy[0]}). Pass --resume to "
                "keep finished work and continue, or choose an empty --out."
            )

    def _setup(self) -> list[dict[str, Any]]:
        get_extractor(self.cfg.features)  # fails early (e.g. dinov2 without weights)
        self.ds.ensure_config(self._generation())
        self._in_manifest = set(self.ds.read_manifest())  # read once (large datasets)
        if not self.spec.resume:
            self._check_fresh()
        envs = load_envmaps(self.spec.envmap_paths)
        self.envs = {e.name: e for e in envs}
        self.pool, self.holdout = env_name_list(envs, self.cfg.holdout_envmaps)
        export_envmaps(envs, self.ds.root / "envmaps")
        entries = [e.manifest_entry() for e in envs]
        self.ds.append_manifest(entries)
        self.total = sum(self._renders_of(src) for src in self.sources)
        return entries

    # -- the loop ------------------------------------------------------------------------------------
    def steps(self) -> Iterator[dict[str, Any]]:
        t0 = time.perf_counter()
        env_entries = self._setup()
        yield {"event": "start", "assets": len(self.sources), "renders": self.total}
        for e in env_entries:
            yield {"event": "envmap", "name": e["id"], "status": e["status"], "error": e.get("error")}
        for src in self.sources:
            yield from self._asset_steps(src)
        self.ds.compact_manifest()
        yield {"event": "end", **self.counts, "seconds": round(time.perf_counter() - t0, 3)}

    def run(self) -> dict[str, Any]:
        """Run to the end; returns the final ``end`` event."""
        last: dict[str, Any] = {}
        for ev in self.steps():
            last = ev
        return last

    def _run_info(self, t0: float) -> dict[str, Any]:
        i, n = self.spec.shard
        return {
            "seconds": round(time.perf_counter() - t0, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "host": platform.node(),
            "pid": os.getpid(),
            "shard": f"{i}/{n}",
        }

    def _renders_of(self, src: AssetSource) -> int:
        """Renders of one asset (the held-out maps' views only for a held-out one, by default)."""
        return count_renders(self.cfg, len(holdout_maps(src.id, self.cfg, self.holdout)))

    def _asset_steps(self, src: AssetSource) -> Iterator[dict[str, Any]]:
        """One asset: skip it if finished, else plan, build, render, write; a failure is recorded."""
        t0 = time.perf_counter()
        n_renders = self._renders_of(src)
        start_done = self.done
        status = self.ds.read_status(src.id)
        if status is not None and (status.get("status") == DONE or not self.spec.retry_failed):
            yield self._skip(src, status, n_renders)
            return
        at = _Stage("source")
        try:
            if src.error:
                raise NearError(src.error)
            at.name = "plan"
            tasks = plan_asset(src.id, self.cfg, self.pool, self.holdout)
            adir = self.ds.asset_dir(src.id)
            kept = set(
                self.ds.prepare_asset(src.id, keep=[t.file for t in tasks] if self.spec.resume else ())
            )
            adir.mkdir(parents=True, exist_ok=True)
            built = yield from self._scene_steps(src, tasks, kept, adir, at)
            self._write_asset(src, tasks, adir, built, at, t0)
            self.counts["done"] += 1
            yield {"event": "asset", "id": src.id, "status": "done", "done": self.done, "total": self.total}
        except Exception as e:  # noqa: BLE001 -- recorded per asset; the batch goes on
            yield self._fail(src, e, at.name, t0, start_done + n_renders)

    def _skip(self, src: AssetSource, status: dict[str, Any], n_renders: int) -> dict[str, Any]:
        """A finished (or, without --retry-failed, failed) asset: count its renders as done."""
        if src.id not in self._in_manifest:
            self.ds.append_manifest([status])  # killed between the marker and the manifest line
        self.done += n_renders
        self.counts["skipped"] += 1
        return {
            "event": "asset",
            "id": src.id,
            "status": "skipped",
            "done": self.done,
            "total": self.total,
        }

    def _scene_steps(
        self, src: AssetSource, tasks: list[ViewTask], kept: set[str], adir: Path, at: _Stage
    ) -> Generator[dict[str, Any], None, _Built]:
        """Build the asset in its scene, voxelize it and render the views not ``kept`` (one event each)."""
        built = _Built()
        with self.scenes.asset_scene() as scene:
            at.name = "import"
            objects = self._load(src, scene)
            at.name = "normalize"
            built.norm, built.tris = normalize(objects, scene, src.label)
            at.name = "voxelize"
            built.coords = voxelize_triangles(built.tris)
            at.name = "materials"
            ensure_materials(objects)
            built.materials = material_report(objects)
            configure_scene(scene, self.cfg, self.spec.threads)
            cam_obj = ensure_camera(scene)
            lighting = Lighting(scene, self.envs)
            at.name = "render"
            try:
                for t in tasks:
                    blender = place_camera(t.camera, cam_obj, scene)
                    built.cams.append({"file": t.file, "set": t.set, "index": t.index, **t.meta,
                                       "camera": t.camera.to_dict(), "params": t.params, "blender": blender})  # fmt: skip
                    built.lights.append({"file": t.file, "set": t.set, "index": t.index, **t.meta,
                                         "lighting": t.lighting})  # fmt: skip
                    if t.file not in kept:
                        env = lighting.apply(t.lighting)
                        self._render(scene, t, env, adir)
                    self.done += 1
                    yield {
                        "event": "render",
                        "id": src.id,
                        "file": t.file,
                        "done": self.done,
                        "total": self.total,
                    }
            finally:
                lighting.close()
        return built

    def _write_asset(
        self, src: AssetSource, tasks: list[ViewTask], adir: Path, built: _Built, at: _Stage, t0: float
    ) -> None:
        """The asset's camera, lighting, voxel and SLAT files, then its status and manifest line."""
        at.name = "write"
        atomic_write_json(adir / "cameras.json", {"convention": CAMERA_CONVENTION, "views": built.cams})
        atomic_write_json(adir / "lights.json", {"envmaps": "DIR/envmaps/<name>.exr", "views": built.lights})
        save_npz_atomic(adir / "mesh_voxels.npz", coords=built.coords.astype(np.uint8))
        at.name = "slat"
        slats = build_slats(adir, built.coords, tasks, get_extractor(self.cfg.features))
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.set] = counts.get(t.set, 0) + 1
        asset = {
            "id": src.id,
            "source": src.to_dict(),
            "normalization": built.norm,
            "materials": built.materials,
            "triangles": len(built.tris),
            "voxels": len(built.coords),
            "renders": counts,
            "slat": slats,
        }
        atomic_write_json(adir / "asset.json", asset)
        entry = {"id": src.id, "kind": "asset", "status": DONE, "source": src.to_dict(), "error": None,
                 "renders": len(tasks), "voxels": len(built.coords), RUN_KEY: self._run_info(t0)}  # fmt: skip
        self.ds.write_status(entry)
        self.ds.append_manifest([entry])

    def _fail(self, src: AssetSource, e: Exception, stage: str, t0: float, done: int) -> dict[str, Any]:
        """Record a failed asset (its partial files removed); the progress counts all its renders."""
        if isinstance(e, NearError):
            msg = str(e)
        else:
            msg = f"internal error in stage {stage}: {type(e).__name__}: {e}"
            traceback.print_exc()
        self.ds.clear_asset(src.id)
        entry = {"id": src.id, "kind": "asset", "status": FAILED, "source": src.to_dict(), "stage": stage,
                 "error": msg, "error_type": type(e).__name__, RUN_KEY: self._run_info(t0)}  # fmt: skip
        self.ds.write_status(entry)
        self.ds.append_manifest([entry])
        self.done = done
        self.counts["failed"] += 1
        return {"event": "asset", "id": src.id, "status": "failed", "error": msg, "done": self.done,
                "total": self.total}  # fmt: skip

    def _load(self, src: AssetSource, scene: Any) -> list[Any]:
        if src.kind == "procedural":
            return build_procedural(src.spec, scene, src.id)
        if src.kind == "objects":
            return copy_objects(list(src.objects), scene)
        return import_file(src.path, scene)

    def _render(self, scene: Any, t: ViewTask, env: Any, adir: Path) -> None:
        tmp = adir / f"{TMP_MARKER}render-{t.set}-{t.index:04d}.exr"
        passes = render_view(scene, tmp)
        keys = SET_PASSES[t.set]
        view = view_from_passes(passes, keys)
        if "shadow" in keys:
            if env is None:
                raise NearError(f"{t.file}: the shadow pass needs an environment-lit view.")
            emap = self.envs[t.lighting["envmap"]].irradiance() * float(t.lighting.get("strength", 1.0))
            view["shadow"], view["shadow_weight"] = shadow_from_passes(
                diffuse_light(passes), passes["Normal"][..., :3], passes["Diffuse Color"][..., :3],
                view["rgba"][..., 3], env, emap,
            )  # fmt: skip
        write_view(adir / t.file, view)
