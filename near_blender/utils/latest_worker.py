"""A background thread that always works on the newest job (the viewport's render worker).

``submit(job)`` hands a job over and returns at once; a job submitted while another runs supersedes
it: the running job sees ``cancelled()`` turn true at its next check (it should check between
stages) and stops, and only the newest waiting job is started, so a stream of submissions (an orbit
in the viewport) never queues stale work. A job reports results through ``publish(result)``, which
calls ``on_result`` (from the worker thread): the consumer keeps the newest result and asks for a
redraw.

The job function runs on the worker thread; it must not touch Blender's data (snapshot first).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .progress import Cancelled

JobFunction = Callable[[Any, Callable[[], bool], Callable[[Any], None]], None]


@dataclass
class WorkerCounters:
    """What happened so far: jobs submitted, started, finished, cancelled (superseded), failed."""

    submitted: int = 0
    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class LatestJobWorker:
    """One daemon thread running ``run(job, cancelled, publish)`` for the newest submitted job."""

    def __init__(
        self,
        run: JobFunction,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[Any, BaseException], Any] | None = None,
        name: str = "near-worker",
    ) -> None:
        self._run, self._on_result, self._on_error = run, on_result, on_error
        self._cond = threading.Condition()
        self._pending: Any = None
        self._has_pending = False
        self._busy = False
        self._stopping = False
        self.counters = WorkerCounters()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- consumer side (any thread; the viewport calls these from Blender's main thread) ----------
    def submit(self, job: Any) -> None:
        """Make ``job`` the next one to run; a waiting job is dropped, a running one is cancelled."""
        with self._cond:
            if self._has_pending:
                self.counters.cancelled += 1  # never started
            self._pending, self._has_pending = job, True
            self.counters.submitted += 1
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """Whether a job is running or waiting."""
        with self._cond:
            return self._busy or self._has_pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job runs or waits (tests and benchmarks); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._has_pending), timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the running job, drop a waiting one and end the thread."""
        with self._cond:
            self._stopping = True
            self._has_pending, self._pending = False, None
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- worker side ------------------------------------------------------------------------------
    def _cancelled(self) -> bool:
        with self._cond:
            return self._has_pending or self._stopping

    def _publish(self, result: Any) -> None:
        if self._on_result is not None:
            self._on_result(result)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_pending or self._stopping)
                if self._stopping:
                    self._busy = False
                    self._cond.notify_all()
                    return
                job, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
                self.counters.started += 1
            try:
                self._run(job, self._cancelled, self._publish)
                outcome = "finished"
            except Cancelled:
                outcome = "cancelled"
            except Exception as e:  # noqa: BLE001 - a worker must survive a failing job
                outcome = "failed"
                self.counters.errors.append(f"{type(e).__name__}: {e}")
                if self._on_error is not None:
                    self._publish(self._on_error(job, e))
            with self._cond:
                setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
                self._busy = False
                self._cond.notify_all()
