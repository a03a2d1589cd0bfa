"""The rendered viewport never blocks Blender: callbacks snapshot and draw, a worker renders.

Driven through bpy with simulated regions (the bpy module has no window): a viewport orbit while
a deliberately slow job runs, the frame that finally shows, superseded jobs, progressive passes,
errors, and F12 of the same scene while the viewport worker renders.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import types

import mathutils
import numpy as np
import pytest

from tests.bpy_session import bpy
from tests.test_engine_assets import _camera_region, _depsgraph, _f12, _rgba, _scene

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

from near_addon.engine import viewport as V  # noqa: E402
from near_addon.operators import import_image  # noqa: E402
from near_addon.operators.demo.scene import model_channels  # noqa: E402

REGION_W, REGION_H = 160, 96


class Recorder:
    """Presenter and engine stand-in: records the frames drawn and the status texts."""

    def __init__(self) -> None:
        self.drawn: list[V.ViewFrame] = []
        self.stats: list[str] = []

    def __call__(self, engine, scene, frame, width, height) -> None:  # the presenter
        self.drawn.append(frame)

    def update_stats(self, a: str, b: str) -> None:
        self.stats.append(b)

    def tag_redraw(self) -> None:
        pass


def _asset(tmp_path):
    """A NeAR asset on the scene's sphere with a light LH-SLAT (a voxel shell, random features;
    stage 1 is not what these tests are about)."""
    from near_blender.data.slat_io import save_slat_npz

    g = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = np.linalg.norm(g - 31.5, axis=1)
    coords = g[np.abs(r - 22) < 0.5][::3].astype(np.int32)
    feats = (
        np.random.default_rng(0)
        .normal(size=(len(coords), model_channels(os.environ["NEAR_MODEL"])))
        .astype(np.float32)
    )
    save_slat_npz(tmp_path / "shell.near.npz", coords, feats)
    M = np.diag([0.8, 0.8, 0.8, 1.0])
    M[:3, 3] = (0.3, 0.0, 0.0)
    obj = import_image.create_asset_object(bpy.context, "shell", "//shell.near.npz", M, "")
    return obj


def _context(region, rv3d):
    return types.SimpleNamespace(region=region, region_data=rv3d)


def _orbit_view(rv3d, step: int):
    """The region's view turned ``step`` degrees about the world Z axis (an orbit)."""
    turn = mathutils.Matrix.Rotation(np.radians(step), 4, "Z")
    return types.SimpleNamespace(view_matrix=rv3d.view_matrix @ turn, window_matrix=rv3d.window_matrix)


def _slow_job(delay: float):
    """The real job, but each pass first 'computes' for ``delay`` seconds (checking for cancellation
    as the renderer does between stages)."""

    def job(view_job, cancelled, publish):
        for label, camera in view_job.passes:
            t_end = time.perf_counter() + delay
            while time.perf_counter() < t_end:
                if cancelled():
                    raise V.Cancelled("superseded")
                time.sleep(0.002)
            one = V.ViewJob(view_job.serial, ((label, camera),), view_job.env, view_job.env_error, view_job.assets,
                            view_job.assets_error, view_job.options, view_job.model, view_job.submitted_at)  # fmt: skip
            V.run_view_job(one, cancelled, publish)

    return job


def test_callbacks_stay_fast_while_a_slow_job_runs_and_the_latest_view_wins(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    _asset(tmp_path)
    scene.near.preview_scale = "1"
    region, rv3d = _camera_region(scene, REGION_W, REGION_H)
    rec = Recorder()
    session = V.ViewportSession(render_job=_slow_job(0.15), present=rec)
    try:
        dg = _depsgraph(scene)
        session.update(rec, _context(region, rv3d), dg)
        session.draw(rec, _context(region, rv3d), dg)  # the first job: reads the world once
        times = []
        for step in range(1, 51):  # an orbit: one new view per draw, a slow job always running
            view = _orbit_view(rv3d, step)
            t0 = time.perf_counter()
            session.update(rec, _context(region, view), dg)
            session.draw(rec, _context(region, view), dg)
            times.append(time.perf_counter() - t0)
        assert session.worker.busy  # the slow job really was running during the callbacks
        assert statistics.median(times) <= 0.005, times
        assert max(times) <= 0.020, times
        assert session.worker.wait_idle(timeout=30)
        session.draw(rec, _context(region, view), dg)
    finally:
        session.close()
    counters = session.worker.counters
    assert counters.submitted == 51 and counters.failed == 0
    assert counters.cancelled >= 45  # superseded jobs were dropped, not queued
    assert session.snapshots.environment_reads == 1  # the world was read once, not per draw
    last = rec.drawn[-1]
    assert last.serial == 51 and last.final and last.error is None  # the latest requested view
    expected, err = V.render_view_now(dg, region, view, scale=1)
    assert err is None and last.pixels.shape == expected.shape == (REGION_H, REGION_W, 4)
    np.testing.assert_allclose(last.pixels, expected, atol=1e-5)
    assert rec.stats[-1].startswith("NeAR final 160x96") and "refining" not in rec.stats[-1]


def test_progressive_passes_coarse_then_final(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    _asset(tmp_path)
    scene.near.preview_scale = "2"
    scene.render.film_transparent = True  # alpha = the asset's coverage
    region, rv3d = _camera_region(scene, REGION_W, REGION_H)
    frames: list[V.ViewFrame] = []
    rec = Recorder()

    def job(view_job, cancelled, publish):
        V.run_view_job(
            view_job, cancelled, lambda f: (isinstance(f, V.ViewFrame) and frames.append(f), publish(f))
        )

    session = V.ViewportSession(render_job=job, present=rec)
    try:
        session.draw(rec, _context(region, rv3d), _depsgraph(scene))
        assert session.worker.wait_idle(timeout=30)
    finally:
        session.close()
    assert [f.label for f in frames] == ["coarse", "final"]
    assert frames[0].pixels.shape == (REGION_H // V.COARSE_DIVISOR, REGION_W // V.COARSE_DIVISOR, 4)
    assert frames[1].pixels.shape == (REGION_H // 2, REGION_W // 2, 4)
    assert frames[0].latency <= frames[1].latency
    assert 0.02 < float(frames[1].pixels[..., 3].mean()) < 0.9  # the asset is in view

    # the coarse frame is the same view: the asset's silhouette sits at the same place (in
    # fractions of the image; coverage itself grows at low resolution, footprints have a floor)
    def centre(alpha: np.ndarray) -> np.ndarray:
        ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
        return (
            np.array(
                [(alpha * (xs + 0.5)).sum() / alpha.shape[1], (alpha * (ys + 0.5)).sum() / alpha.shape[0]]
            )
            / alpha.sum()
        )

    coarse, final = (f.pixels[..., 3] for f in frames)
    np.testing.assert_allclose(centre(coarse), centre(final), atol=1.5 / coarse.shape[1])


def test_errors_reach_the_text_not_the_callback(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    asset = _asset(tmp_path)
    from pathlib import Path

    Path(bpy.path.abspath(asset.near_asset.sidecar)).unlink()
    region, rv3d = _camera_region(scene, REGION_W, REGION_H)
    rec = Recorder()
    session = V.ViewportSession(present=rec)
    try:
        session.draw(rec, _context(region, rv3d), _depsgraph(scene))
        assert session.worker.wait_idle(timeout=30)
        session.draw(rec, _context(region, rv3d), _depsgraph(scene))
        # a job that raises something unexpected: black frame, message in the text, worker alive
        broken = V.ViewportSession(render_job=lambda job, c, p: 1 / 0, present=rec)
        try:
            broken.draw(rec, _context(region, rv3d), _depsgraph(scene))
            assert broken.worker.wait_idle(timeout=10)
            broken.draw(rec, _context(region, rv3d), _depsgraph(scene))
        finally:
            broken.close()
    finally:
        session.close()
    missing = next(f for f in rec.drawn if f.error and "missing" in f.error)
    assert np.allclose(missing.pixels[..., 3], 1.0)  # the world is still shown
    assert any("missing" in s for s in rec.stats)
    assert rec.drawn[-1].error.startswith("NeAR viewport failed: ZeroDivisionError")
    assert broken.worker.counters.failed == 1


def test_f12_while_the_viewport_worker_renders(tmp_path):
    scene, sphere, _ = _scene(tmp_path)
    _asset(tmp_path)
    scene.near.preview_scale = "1"
    region, rv3d = _camera_region(scene, REGION_W, REGION_H)
    dg = _depsgraph(scene)
    f12_alone = _rgba(_f12(scene, tmp_path / "alone.exr"))
    views = [_orbit_view(rv3d, 3 * k) for k in range(6)]
    alone = [V.render_view_now(dg, region, v, scale=1)[0] for v in views]

    rec = Recorder()
    frames: list[V.ViewFrame] = []

    def job(view_job, cancelled, publish):  # every view rendered to the end (nothing superseded)
        V.run_view_job(
            view_job, lambda: False, lambda f: (isinstance(f, V.ViewFrame) and frames.append(f), publish(f))
        )

    session = V.ViewportSession(render_job=job, present=rec)
    errors: list[BaseException] = []
    # snapshots read bpy: take them here, on the main thread; a helper thread hands them to the
    # worker one after another while F12 renders on the main thread
    jobs = [session.snapshots.snapshot(dg, region, v, 1) for v in views]

    def feed() -> None:
        try:
            for j in jobs:
                session.worker.submit(j)
                session.worker.wait_idle(timeout=30)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    try:
        feeder = threading.Thread(target=feed)
        feeder.start()
        time.sleep(0.01)
        f12_during = _rgba(_f12(scene, tmp_path / "during.exr"))
        overlapped = session.worker.busy or feeder.is_alive()
        feeder.join(timeout=120)
    finally:
        session.close()
    assert not errors and session.worker.counters.failed == 0
    assert overlapped  # the viewport worker still had views to render when F12 finished
    np.testing.assert_allclose(f12_during, f12_alone, atol=1e-5)
    finals = {f.serial: f for f in frames if f.final}
    assert len(finals) >= 1 and all(f.error is None for f in finals.values())
    for serial, f in finals.items():
        np.testing.assert_allclose(f.pixels, alone[serial - 1], atol=1e-5)
