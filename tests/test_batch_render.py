"""``near render`` / engine/batch.py: animation and batch renders with the NeAR engine in real
Blender, with a tiny random model and a small random LH-SLAT (no stage 1: the sidecar is written
directly, so the module stays fast)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from near_blender import NearError, cli
from near_blender.data.slat_io import save_slat_npz
from near_blender.render import exr
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from tests.bpy_session import bpy, empty_scene, hdri_world, import_addon, studio_hdri

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

addon = import_addon()
from near_addon.engine import batch, model_manager  # noqa: E402
from near_addon.engine import session as S  # noqa: E402
from near_addon.operators.import_image import create_asset_object  # noqa: E402

W, H = 48, 36
CENTRE = np.array([0.2, 0.1, 0.0])  # where the asset's box centre sits in the world
STEP = np.array([0.0, 0.25, 0.0])  # camera translation per frame (along its image x axis)


def _ball_slat(path: Path, radius: float = 9.0, seed: int = 0) -> Path:
    """A voxel ball (~3k voxels) with random 16-channel features, saved as a sidecar."""
    g = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = g[np.linalg.norm(g - 31.5, axis=1) < radius]
    feats = np.random.default_rng(seed).normal(size=(len(coords), 16)).astype(np.float32)
    return save_slat_npz(path, coords, feats)


def _cameras(n: int) -> list[Camera]:
    """Stack cameras of frames 1..n: one orientation, translated by STEP per frame."""
    eye0 = np.array([2.4, 0.0, 0.5])
    return [
        Camera(look_at(eye0 + k * STEP, CENTRE + k * STEP), intrinsics_from_fov(45, W, H), W, H, 0.1, 100)
        for k in range(n)
    ]


def _scene(tmp_path: Path, frames: int = 3, world_rotations_deg: list[float] | None = None):
    """A saved scene: a NeAR asset, a camera keyed per frame, the forest HDRI (Mapping rotation keyed
    per frame when given). Returns (scene, asset object, stack cameras per frame)."""
    scene = empty_scene()
    mapping = hdri_world(scene)
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    cams = _cameras(frames)
    for f, cam in enumerate(cams, start=1):  # a key on every frame: exact values whatever the interpolation
        addon.engine.scene_bridge.apply_camera(cam, cam_obj, scene)
        cam_obj.keyframe_insert("location", frame=f)
        cam_obj.keyframe_insert("rotation_euler", frame=f)
        if world_rotations_deg is not None:
            mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(world_rotations_deg[f - 1]))
            mapping.inputs["Rotation"].keyframe_insert("default_value", frame=f)
    scene.frame_start, scene.frame_end = 1, frames
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    sidecar = _ball_slat(tmp_path / "ball.near.npz")
    M = np.diag([0.8, 0.8, 0.8, 1.0])
    M[:3, 3] = CENTRE
    asset = create_asset_object(bpy.context, "ball", bpy.path.relpath(str(sidecar)), M, "ball.png")
    scene.render.engine = "NEAR"
    scene.render.film_transparent = True
    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(tmp_path / "render" / "shot_####")
    bpy.ops.wm.save_mainfile()
    return scene, asset, cams


def _centroid(a: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return np.array([(a * (xs + 0.5)).sum(), (a * (ys + 0.5)).sum()]) / a.sum()


def test_animated_camera_frames_and_caches(tmp_path):
    scene, _, cams = _scene(tmp_path)
    S.render_caches().clear()  # cold caches: the counters below are this batch's encoder runs
    events = list(batch.render_frames(scene, [1, 2, 3], out=tmp_path / "out", resolution=(W, H)))
    assert [e["event"] for e in events] == ["start", "frame", "frame", "frame", "end"]
    paths = [Path(e["path"]) for e in events[1:4]]
    assert [p.name for p in paths] == ["shot_0001.exr", "shot_0002.exr", "shot_0003.exr"]
    assert all(p.parent == tmp_path / "out" for p in paths) and all(p.is_file() for p in paths)
    assert not list((tmp_path / "out").glob(".tmp-*"))
    alphas = [exr.read_exr_channels(p)["ViewLayer.Alpha.A"] for p in paths]
    assert all(a.shape == (H, W) for a in alphas)
    assert all(0.02 < a.mean() < 0.6 for a in alphas)
    # The silhouette moves by the projected amount of the camera motion, frame after frame.
    uv = [c.project(CENTRE[None])[0][0] for c in cams]
    for k in (1, 2):
        expected = uv[k] - uv[0]
        assert np.linalg.norm(expected) > 5.0  # the test would notice a static camera
        np.testing.assert_allclose(_centroid(alphas[k]) - _centroid(alphas[0]), expected, atol=1.0)
    # One asset encode and one lighting encode for the three frames (the camera does not turn and
    # the world is static), the others are cache hits.
    cache = events[-1]["cache"]
    assert cache["asset_misses"] == 1 and cache["asset_hits"] == 2
    assert cache["lighting_misses"] == 1 and cache["lighting_hits"] == 2
    assert cache["conditioning_builds"] == 1
    assert events[-1]["done"] == 3 and events[-1]["skipped"] == 0

    # Resume: existing frames are skipped, --overwrite redoes them.
    stamp = paths[1].stat().st_mtime_ns
    again = list(batch.render_frames(scene, [1, 2, 3], out=tmp_path / "out", resolution=(W, H)))
    assert [e["status"] for e in again[1:4]] == ["skipped"] * 3 and paths[1].stat().st_mtime_ns == stamp
    paths[1].unlink()
    again = list(batch.render_frames(scene, [2], out=tmp_path / "out", resolution=(W, H), overwrite=False))
    assert again[1]["status"] == "done" and paths[1].is_file()
    assert again[-1]["cache"]["asset_misses"] == 0 and again[-1]["cache"]["lighting_misses"] == 0


def test_render_animation_world_rotation_per_frame(tmp_path):
    """``render(animation=True)`` is what ``blender -b -a`` runs: the engine must read the camera and
    the world's Mapping rotation at each frame (the evaluated scene, not the original one)."""
    from near_blender.scene import PlacedAsset

    rot = [0.0, 90.0]
    scene, asset, cams = _scene(tmp_path, frames=2, world_rotations_deg=rot)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.frame_set(1)
    S.render_caches().clear()
    bpy.ops.render.render(animation=True)
    chans = [exr.read_exr_channels(tmp_path / "render" / f"shot_{f:04d}.exr") for f in (1, 2)]
    pipe = model_manager.get_pipeline()
    stats = S.render_caches().stats()
    (placed,) = S.collect_assets(bpy.context.evaluated_depsgraph_get())  # the one asset
    key, coords, feats = S.render_caches().sidecar(placed)
    env0 = exr.read_envmap(studio_hdri("forest"))
    for k, ch in enumerate(chans):
        rgb = np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGB"], -1)
        placed = [PlacedAsset(key, coords, feats, np.array(asset.matrix_world))]
        direct = (
            S.render_caches()
            .scene_renderer(pipe)
            .render(placed, cams[k], env0.with_rotation(math.radians(rot[k])))
        )
        np.testing.assert_allclose(rgb, direct["hdr"], atol=2e-4)
    a0, a1 = (ch["ViewLayer.Alpha.A"] for ch in chans)
    np.testing.assert_allclose(_centroid(a1) - _centroid(a0), cams[1].project(CENTRE[None])[0][0]
                               - cams[0].project(CENTRE[None])[0][0], atol=1.0)  # fmt: skip
    # Two world rotations -> two tokenizer runs, but the pixels were resampled only once.
    assert stats["lighting_misses"] == 2 and stats["conditioning_builds"] == 1 and stats["asset_misses"] == 1


def test_scene_checks_are_clear_errors(tmp_path):
    scene, asset, _ = _scene(tmp_path, frames=1)
    assert batch.check_scene(scene, "NEAR") == ["ball"]
    assert batch.check_scene(scene, "CYCLES") == []
    Path(bpy.path.abspath(asset.near_asset.sidecar)).unlink()
    with pytest.raises(NearError, match=r"sidecar \.npz\) of these NeAR assets is missing: ball"):
        batch.check_scene(scene, "NEAR")
    asset.near_asset.is_asset = False
    with pytest.raises(NearError, match="no NeAR asset"):
        batch.check_scene(scene, "NEAR")
    scene.camera = None
    with pytest.raises(NearError, match="no active camera"):
        batch.check_scene(scene, "CYCLES")


def test_outputs_that_would_lose_frames_are_refused_before_rendering(tmp_path):
    scene, _, _ = _scene(tmp_path, frames=2)
    rendered = []
    real = batch.render_frame
    batch.render_frame = lambda *a: rendered.append(a)  # nothing may render before the checks
    try:
        settings = scene.render.image_settings
        settings.media_type = "VIDEO"  # a movie: each frame would be saved over the one .mp4
        with pytest.raises(NearError, match=r"movie \(FFMPEG\).*File Format to PNG or OpenEXR"):
            list(batch.render_frames(scene, [1, 2], out=tmp_path / "movie"))
        settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder")
        with pytest.raises(NearError, match="it is a file, not a folder.*--out"):
            list(batch.render_frames(scene, [1, 2], out=blocker))
        readonly = tmp_path / "readonly"
        readonly.mkdir()
        readonly.chmod(0o555)
        try:
            if not os.access(readonly, os.W_OK):  # (root ignores permissions)
                with pytest.raises(NearError, match="Cannot write frames"):
                    list(batch.render_frames(scene, [1, 2], out=readonly))
        finally:
            readonly.chmod(0o755)
    finally:
        batch.render_frame = real
    assert rendered == [] and not list((tmp_path / "movie").glob("*"))  # nothing rendered, nothing written


def test_cli_subprocess_renders_resumes_and_reports(tmp_path, capsys):
    """The real command: a bpy subprocess, a progress bar, resume and clear errors."""
    _scene(tmp_path)
    blend = tmp_path / "scene.blend"
    out = tmp_path / "cli"
    out.mkdir()
    (out / "shot_0002.exr").write_bytes(b"already rendered")
    args = ["render", str(blend), "--frames", "1-3", "--out", str(out), "--resolution", "32x24"]
    assert cli.main([*args, "--progress", "none"]) == 0
    text = capsys.readouterr().out
    assert "2 rendered, 1 skipped" in text and "1 asset encode(s), 1 lighting encode(s)" in text
    assert (out / "shot_0002.exr").read_bytes() == b"already rendered"
    for f in (1, 3):
        ch = exr.read_exr_channels(out / f"shot_{f:04d}.exr")
        assert ch["ViewLayer.Alpha.A"].shape == (24, 32)
    # errors: no file (before Blender starts), a missing sidecar (from Blender), bad frames
    assert cli.main(["render", str(tmp_path / "nope.blend")]) == 2
    assert "No such .blend file" in capsys.readouterr().err
    assert cli.main(["render", str(blend), "--frames", "3-1"]) == 2
    assert "ends before it starts" in capsys.readouterr().err
    (tmp_path / "ball.near.npz").unlink()
    assert cli.main([*args, "--overwrite", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "ball.near.npz" in err and "missing" in err and "Traceback" not in err


def _blender_shim(path: Path, preamble: str = "") -> Path:
    """An executable standing in for a Blender binary: it takes Blender's command line
    (``-b --python-exit-code 1 --python SCRIPT -- ARGS``) and runs SCRIPT with this Python's bpy
    module and Blender's ``sys.argv`` (the script's own arguments after ``--``). ``preamble`` runs
    first (e.g. to hide a module, as a Blender without the extension's wheels would)."""
    import stat
    import sys

    path.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        "if sys.argv[1:5] != ['-b', '--python-exit-code', '1', '--python'] or sys.argv[6:7] != ['--']:\n"
        "    sys.exit(64)\n"
        f"{preamble}\n"
        "script = sys.argv[5]\n"
        "sys.argv = ['blender', *sys.argv[1:]]\n"
        "runpy.run_path(script, run_name='__main__')\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_cli_with_a_blender_binary_command_line(tmp_path, capsys):
    """``near render --blender PATH`` builds Blender's command line and the script reads its
    arguments after ``--``; a Blender whose Python lacks torch is a clear error, not a traceback."""
    _scene(tmp_path)
    out = tmp_path / "bin"
    args = ["render", str(tmp_path / "scene.blend"), "--frames", "2", "--out", str(out),
            "--resolution", "32x24", "--progress", "none"]  # fmt: skip
    assert cli.main([*args, "--blender", str(_blender_shim(tmp_path / "blender"))]) == 0
    assert "1 rendered, 0 skipped" in capsys.readouterr().out
    assert exr.read_exr_channels(out / "shot_0002.exr")["ViewLayer.Alpha.A"].shape == (24, 32)
    assert not (out / "shot_0001.exr").exists()

    no_torch = _blender_shim(tmp_path / "blender-no-torch", "sys.modules['torch'] = None")
    assert cli.main([*args, "--overwrite", "--blender", str(no_torch)]) == 2
    err = capsys.readouterr().err
    assert "cannot import torch" in err and "Install the NeAR extension" in err
    assert "Traceback" not in err
    assert cli.main([*args, "--blender", str(tmp_path / "scene.blend")]) == 2
    assert "not an executable file" in capsys.readouterr().err
