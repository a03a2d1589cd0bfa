"""The viewport's worker thread: the newest job wins, superseded work stops, failures are survived."""

from __future__ import annotations

import threading

from near_blender.utils.latest_worker import LatestJobWorker
from near_blender.utils.progress import Cancelled


def _stage_job(started: threading.Event, release: threading.Event, log: list):
    """A job of 5 stages; stage 0 waits until released, each stage checks for cancellation."""

    def run(job, cancelled, publish):
        log.append(("start", job))
        for stage in range(5):
            if stage == 0:
                started.set()
                release.wait(5)
            if cancelled():
                log.append(("cancel", job, stage))
                raise Cancelled("superseded")
            publish((job, stage))

    return run


def test_a_newer_job_supersedes_the_running_one_and_waiting_ones_are_dropped():
    started, release, log = threading.Event(), threading.Event(), []
    results = []
    worker = LatestJobWorker(_stage_job(started, release, log), on_result=results.append)
    try:
        worker.submit("a")
        assert started.wait(5)
        for name in ("b", "c", "d"):  # while "a" runs: only "d" may run next
            worker.submit(name)
        release.set()
        assert worker.wait_idle(5)
    finally:
        worker.stop()
    assert [e for e in log if e[0] == "start"] == [("start", "a"), ("start", "d")]
    assert ("cancel", "a", 0) in log  # stopped at its first check, published nothing
    assert results == [("d", s) for s in range(5)]
    c = worker.counters
    assert (c.submitted, c.started, c.finished, c.cancelled, c.failed) == (4, 2, 1, 3, 0)


def test_a_failing_job_is_reported_and_the_worker_lives_on():
    def run(job, cancelled, publish):
        if job == "bad":
            raise ValueError("broken LH-SLAT")
        publish(job)

    results = []
    worker = LatestJobWorker(run, on_result=results.append, on_error=lambda job, e: f"error in {job}: {e}")
    try:
        worker.submit("bad")
        assert worker.wait_idle(5)
        assert results == ["error in bad: broken LH-SLAT"]  # what on_error made of it is published
        worker.submit("good")
        assert worker.wait_idle(5)
        assert results[-1] == "good"
    finally:
        worker.stop()
    assert worker.counters.failed == 1 and worker.counters.finished == 1
    assert worker.counters.errors == ["ValueError: broken LH-SLAT"]


def test_stop_cancels_the_running_job_and_ends_the_thread():
    started, release, log = threading.Event(), threading.Event(), []
    worker = LatestJobWorker(_stage_job(started, release, log))
    worker.submit("a")
    assert started.wait(5)
    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 5})
    stopper.start()
    while not worker._cancelled():  # stop() has asked; now let the job reach its next check
        threading.Event().wait(0.001)
    release.set()
    stopper.join(10)
    assert not worker._thread.is_alive()
    assert log[-1] == ("cancel", "a", 0) and worker.counters.cancelled == 1
