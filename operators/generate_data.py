"""Operator "Generate NeAR training data": the selected objects -> a dataset folder.

It runs the same job as ``near datagen`` (``operators/datagen/job.py``) inside the open Blender,
one render per timer tick, with Blender's progress indicator, a status-bar message and ESC to
cancel. Each asset is built in a temporary scene from copies of the objects (with copied
materials), so the artist's scene is never modified. A cancelled run resumes where it stopped
the next time (finished views are kept). Without a window (``blender -b``) it runs to the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from near_blender import NearError
from near_blender.data.config import preset_config
from near_blender.data.sources import object_sources

from .datagen.assets import GEOMETRY_TYPES
from .datagen.job import DatagenJob, JobSpec, TemporaryScenes
from .datagen.lighting import find_envmaps


class JobRunner:
    """Advances a :class:`DatagenJob` one step (one render) at a time; knows its progress."""

    def __init__(self, job: DatagenJob) -> None:
        self.job = job
        self._steps = job.steps()
        self.last: dict[str, Any] = {}
        self.finished = False
        self.failures: list[str] = []

    def step(self) -> dict[str, Any] | None:
        """Run until the next event; None when the job is over."""
        if self.finished:
            return None
        try:
            ev = next(self._steps)
        except StopIteration:
            self.finished = True
            return None
        self.last = ev
        if ev.get("event") == "asset" and ev.get("status") == "failed":
            self.failures.append(f"{ev['id']}: {ev['error']}")
        if ev.get("event") == "end":
            self.finished = True
        return ev

    @property
    def fraction(self) -> float:
        total = self.job.total
        return self.job.done / total if total else 0.0

    def cancel(self) -> None:
        """Stop between renders; the temporary scene is removed, finished views stay on disk."""
        self._steps.close()
        self.finished = True


def selected_assets(context: Any) -> list[str]:
    return sorted(o.name for o in context.selected_objects if o.type in GEOMETRY_TYPES)


class NEAR_OT_generate_training_data(bpy.types.Operator):
    """Render NeAR training data (homogenized, shaded, random-lit and relit views with G-buffers,
    SLAT files) for the selected objects into a dataset folder"""

    bl_idname = "near.generate_training_data"
    bl_label = "Generate NeAR training data"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Dataset folder", subtype="DIR_PATH")
    preset: EnumProperty(
        name="Preset",
        items=[
            ("tiny", "Tiny", "128 px, few views: quick, CPU friendly"),
            ("paper", "Paper", "512 px, the paper's view counts"),
        ],
        default="tiny",
    )
    engine: EnumProperty(
        name="Engine",
        items=[
            ("eevee", "EEVEE", "EEVEE Next (the paper's)"),
            ("cycles", "Cycles", "faster on CPU-only machines"),
        ],
        default="eevee",
    )
    resolution: IntProperty(name="Resolution", description="0 = the preset's", default=0, min=0, max=4096)
    each_object: BoolProperty(name="One asset per object", default=False)
    resume: BoolProperty(
        name="Resume", description="Keep finished assets and views in the folder", default=True
    )

    _timer: Any = None
    _runner: JobRunner | None = None

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(selected_assets(context))

    def _make_job(self, context: Any) -> DatagenJob:
        if not self.directory:
            raise NearError("Choose a dataset folder.")
        cfg = preset_config(self.preset, self.engine, resolution=self.resolution or None)
        sources = object_sources(selected_assets(context), bpy.data.filepath, self.each_object)
        spec = JobSpec(
            out=Path(bpy.path.abspath(self.directory)),
            config=cfg,
            sources=sources,
            envmap_paths=find_envmaps(None),
            resume=self.resume,
        )
        return DatagenJob(spec, TemporaryScenes())

    def invoke(self, context: Any, event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        try:
            runner = JobRunner(self._make_job(context))
            if bpy.app.background or context.window is None:  # no event loop: run to the end
                while runner.step() is not None:
                    pass
                return self._finish(context, runner)
            runner.step()  # set-up errors surface here, before the modal loop
        except NearError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self._runner = runner
        wm = context.window_manager
        wm.progress_begin(0, 1000)
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> set[str]:
        runner = self._runner
        if event.type == "ESC":
            runner.cancel()
            self._stop(context)
            self.report({"WARNING"}, "NeAR training data: cancelled (run it again to resume).")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            ev = runner.step()
        except NearError as e:
            self._stop(context)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        context.window_manager.progress_update(int(1000 * runner.fraction))
        if context.workspace is not None:
            last = (ev or {}).get("file") or (ev or {}).get("id") or ""
            context.workspace.status_text_set(
                f"NeAR training data: {runner.job.done}/{runner.job.total} views {last}  (Esc to cancel)"
            )
        if runner.finished:
            self._stop(context)
            return self._finish(context, runner)
        return {"RUNNING_MODAL"}

    def _stop(self, context: Any) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def _finish(self, context: Any, runner: JobRunner) -> set[str]:
        counts = runner.job.counts
        msg = f"NeAR training data: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped"
        self.report({"WARNING"} if runner.failures else {"INFO"}, msg)
        for f in runner.failures[:5]:
            self.report({"WARNING"}, f)
        return {"FINISHED"}


def menu_func(self: Any, context: Any) -> None:
    self.layout.operator(NEAR_OT_generate_training_data.bl_idname, icon="RENDER_STILL")
