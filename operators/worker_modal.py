"""Long operator work off Blender's UI thread: a worker thread, progress, Esc to cancel.

An operator that mixes in :class:`WorkerModal` prepares a job on the main thread (reading what it
needs from Blender), then calls :meth:`WorkerModal.run_job` with a function ``work(job, progress,
cancel)`` that reads nothing of Blender. In the UI the function runs on a thread while a modal
timer shows its progress in the status bar (Esc cancels); in background mode and scripts it runs in
place, printing progress. Either way :meth:`finish` is called on the main thread with the result.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import bpy

from near_blender import NearError
from near_blender.utils.progress import Cancelled

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
Work = Callable[[Any, ProgressFn, CancelFn], Any]


class WorkerModal:
    """Mixin for a ``bpy.types.Operator``; subclasses set ``work_label`` and define ``finish``."""

    work_label = "NeAR"
    _timer = None
    _thread: threading.Thread | None = None
    _blocking_cancel: CancelFn | None = None  # tests simulate Esc in background mode with this

    def finish(self, context: Any, result: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def abort(self, context: Any) -> None:
        """Called on the main thread instead of :meth:`finish` when the work was cancelled or failed:
        undo what the operator prepared for ``finish`` (default: nothing)."""

    def run_job(self, context: Any, job: Any, work: Work) -> set[str]:
        if bpy.app.background or context.window_manager.windows[:] == []:
            return self._run_blocking(context, job, work)
        return self._start_modal(context, job, work)

    # -- blocking path (background mode, scripts) -----------------------------------------------
    def _run_blocking(self, context: Any, job: Any, work: Work) -> set[str]:
        def progress(f: float, msg: str) -> None:
            print(f"{self.work_label}: {f * 100:5.1f}% {msg}", flush=True)

        cancel = type(self)._blocking_cancel or (lambda: False)
        try:
            result = work(job, progress, cancel)
        except Cancelled:
            self.abort(context)
            self.report({"WARNING"}, f"{self.work_label} cancelled; nothing was changed.")
            return {"CANCELLED"}
        except NearError as e:
            self.abort(context)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.finish(context, result)
        return {"FINISHED"}

    # -- modal path (UI) ---------------------------------------------------------------------------
    def _start_modal(self, context: Any, job: Any, work: Work) -> set[str]:
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()

        def run() -> None:  # reads nothing of the operator or of Blender: all of it is in ``job``
            try:
                result = work(job, lambda f, m: self._events.put(("progress", f, m)), self._cancel.is_set)
                self._events.put(("done", result, None))
            except Cancelled:
                self._events.put(("cancelled", None, None))
            except Exception as e:  # noqa: BLE001 - reported on the main thread
                self._events.put(("error", e, None))

        self._thread = threading.Thread(target=run, name=f"near-{self.work_label}", daemon=True)
        self._thread.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> set[str]:
        wm = context.window_manager
        if event.type == "ESC":
            self._cancel.set()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        while True:
            try:
                kind, a, b = self._events.get_nowait()
            except queue.Empty:
                return {"RUNNING_MODAL"}
            if kind == "progress":
                wm.progress_update(int(a * 100))
                context.workspace.status_text_set(f"{self.work_label}: {b} ({a * 100:.0f}%) - Esc to cancel")
                continue
            self._cleanup(context)
            if kind == "done":
                self.finish(context, a)
                return {"FINISHED"}
            self.abort(context)
            if kind == "cancelled":
                self.report({"WARNING"}, f"{self.work_label} cancelled; nothing was changed.")
                return {"CANCELLED"}
            msg = str(a) if isinstance(a, NearError) else f"{self.work_label} failed: {type(a).__name__}: {a}"
            self.report({"ERROR"}, msg)
            return {"CANCELLED"}

    def _cleanup(self, context: Any) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.workspace.status_text_set(None)
