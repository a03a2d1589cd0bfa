"""``near camera-from-blend`` and ``near render ASSET.npz``: the CLI path from an LH-SLAT to an image
gives F12's passes. A real .blend (a NeAR asset, the forest HDRI with a strength and a Mapping
rotation, an animated camera with lens shift and a 50 % resolution) is rendered with F12; its camera
is written by ``near camera-from-blend`` and the asset's ``.npz`` rendered by ``near render`` under
the same HDRI: every pass must match (issue 22's bar: bit-identical or within 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from near_blender import cli
from near_blender.data.slat_io import save_slat_npz
from near_blender.render import exr
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from tests.bpy_session import bpy, empty_scene, hdri_world, import_addon, studio_hdri

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

addon = import_addon()
from near_addon.engine import scene_bridge  # noqa: E402
from near_addon.operators.import_image import create_asset_object  # noqa: E402

W, H = 64, 48
STRENGTH, ROTATION_DEG = 1.7, 35.0
TOLERANCE = 1e-5  # issue 22: every pass bit-identical to F12 or within this


def _scene(tmp_path: Path):
    """A saved .blend whose frame 2 is the shot: a NeAR asset (rotated, scaled, moved) whose sidecar
    holds its own matrix_world, a second camera, and the scene camera keyed on frames 1 and 2 (lens
    shift, 128x96 at 50 %). Returns (scene, asset .npz, .blend)."""
    scene = empty_scene()
    hdri_world(scene, "forest", ROTATION_DEG, STRENGTH)
    cams = []
    for name in ("cam", "other"):
        obj = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        scene.collection.objects.link(obj)
        cams.append(obj)
    cam_obj = scene.camera = cams[0]
    for frame, eye in ((1, (2.6, 0.4, 0.3)), (2, (2.2, -1.2, 0.9))):
        cam = Camera(look_at(eye, (0.2, 0.0, 0.0)), intrinsics_from_fov(45, W, H), W, H, 0.1, 100)
        scene_bridge.apply_camera(cam, cam_obj, scene)
        cam_obj.keyframe_insert("location", frame=frame)
        cam_obj.keyframe_insert("rotation_euler", frame=frame)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = (
        2 * W,
        2 * H,
        50,
    )
    cam_obj.data.shift_x, cam_obj.data.shift_y, cam_obj.data.sensor_fit = 0.04, -0.03, "AUTO"
    scene.frame_set(2)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    g = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = g[np.linalg.norm((g - 31.5) / (12.0, 8.0, 10.0), axis=1) < 1.0]  # an ellipsoid, ~4k voxels
    feats = np.random.default_rng(3).normal(size=(len(coords), 16)).astype(np.float32)
    npz = save_slat_npz(tmp_path / "vase.near.npz", coords, feats)
    M = np.eye(4)
    M[:3, :3] = 0.9 * np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    M[:3, 3] = (0.2, 0.05, -0.1)
    asset = create_asset_object(bpy.context, "vase", bpy.path.relpath(str(npz)), M, "vase.png")
    bpy.context.view_layer.update()
    with np.load(npz, allow_pickle=False) as d:  # the sidecar carries the placement Blender holds
        arrays = {**dict(d), "matrix_world": np.array(asset.matrix_world, dtype=np.float64)}
    np.savez(npz, **arrays)
    scene.render.engine = "NEAR"
    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.color_depth = "32"
    bpy.ops.wm.save_mainfile()
    return scene, npz, tmp_path / "shot.blend"


def _f12(scene, path: Path) -> dict[str, np.ndarray]:
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return exr.read_exr_channels(path)


def test_cli_render_of_the_npz_equals_f12(tmp_path, tiny_model, capsys):
    scene, npz, blend = _scene(tmp_path)
    # The camera JSON is the scene camera at frame 2, exactly as the bridge reads it.
    assert cli.main(["camera-from-blend", str(blend), "--frame", "2"]) == 0
    cam_json = tmp_path / "shot.camera.json"
    written = json.loads(cam_json.read_text())
    expected = scene_bridge.scene_camera(scene).to_dict()
    assert set(written) == set(expected)
    for k in ("viewmat", "K", "width", "height", "near", "far"):
        np.testing.assert_allclose(np.asarray(written[k]), np.asarray(expected[k]), atol=1e-9, err_msg=k)
    assert (
        (written["model"], written["meta"])
        == (expected["model"], expected["meta"])
        == ("pinhole", {"name": "cam"})
    )
    assert (written["width"], written["height"]) == (W, H)
    # frame 1 is another view: the frame is honoured
    assert (
        cli.main(["camera-from-blend", str(blend), "--frame", "1", "--out", str(tmp_path / "f1.json")]) == 0
    )
    assert not np.allclose(json.loads((tmp_path / "f1.json").read_text())["viewmat"], written["viewmat"])
    capsys.readouterr()

    report = []
    for transparent in (False, True):
        scene.render.film_transparent = transparent
        f12 = _f12(scene, tmp_path / f"f12_{transparent}.exr")
        out = tmp_path / f"cli_{transparent}"
        args = ["render", str(npz), "--env", str(studio_hdri("forest")), "--strength", str(STRENGTH),
                "--rotation", str(ROTATION_DEG), "--camera", str(cam_json), "--out", str(out),
                "--model", str(tiny_model), "--device", "cpu", "--progress", "none"]  # fmt: skip
        assert cli.main(args + (["--transparent"] if transparent else [])) == 0
        assert "vase.near.npz" in capsys.readouterr().out
        ours = exr.read_exr_channels(out / "vase.near.exr")
        assert set(ours) == set(f12)  # the same passes and channel names
        assert 0.01 < f12["ViewLayer.Alpha.A"].mean() < 0.7  # the asset is in the frame, not everywhere
        worst = max(float(np.abs(ours[k] - f12[k]).max()) for k in f12)
        report.append(worst)
        assert worst <= TOLERANCE, {k: float(np.abs(ours[k] - f12[k]).max()) for k in f12}
        # the PNG is Combined through AgX (8 bit)
        from PIL import Image

        from near_blender.render.tonemap import agx

        with Image.open(out / "vase.near.png") as im:
            png = np.asarray(im, dtype=np.float32) / 255.0
        rgba = np.stack([f12[f"ViewLayer.Combined.{c}"] for c in "RGBA"], -1)
        a = rgba[..., 3:]
        rgb = rgba[..., :3] / np.where(a > 0, a, 1.0) if transparent else rgba[..., :3]
        assert png.shape == (H, W, 4 if transparent else 3)
        assert np.abs(png[..., :3] - agx(rgb)).max() <= 1.0 / 255 + 1e-6
        assert not list(out.glob(".tmp-*"))
    print(f"max |CLI - F12| over all passes: opaque {report[0]:.3g}, transparent {report[1]:.3g}")


def test_camera_from_blend_errors(tmp_path, capsys, monkeypatch):
    scene, _, blend = _scene(tmp_path)
    assert cli.main(["camera-from-blend", str(tmp_path / "nope.blend")]) == 2
    assert "No such .blend file" in capsys.readouterr().err
    assert cli.main(["camera-from-blend", str(blend), "--camera", "missing"]) == 2
    err = capsys.readouterr().err
    assert "Camera 'missing' is not in scene 'Scene'; its cameras: 'cam', 'other'" in err
    assert "Traceback" not in err
    scene.camera = None
    bpy.ops.wm.save_mainfile()
    assert cli.main(["camera-from-blend", str(blend)]) == 2
    err = capsys.readouterr().err
    assert "has no active camera: pass --camera NAME (its cameras: 'cam', 'other')" in err
    assert cli.main(["camera-from-blend", str(blend), "--camera", "other"]) == 0  # a named camera works
    assert (tmp_path / "shot.camera.json").is_file()
    # an unwritable output is refused before Blender starts
    from near_blender.commands import camera_from_blend

    monkeypatch.setattr(camera_from_blend, "run_blender_events", lambda *a: pytest.fail("Blender started"))
    (tmp_path / "blocker").write_text("a file")
    assert cli.main(["camera-from-blend", str(blend), "--out", str(tmp_path / "blocker" / "cam.json")]) == 2
    assert "blocker: it is a file, not a folder. Choose another place with --out" in capsys.readouterr().err
    assert cli.main(["camera-from-blend", str(blend), "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err


def test_render_npz_bad_inputs_write_nothing(tmp_path, capsys):
    """Clear errors (exit 2) before the model loads (the model path does not exist) and no output."""
    g = np.argwhere(np.ones((4, 4, 4), bool)) + 30
    good = save_slat_npz(tmp_path / "a.npz", g, np.zeros((len(g), 16), np.float32))
    np.savez(tmp_path / "nocoords.npz", feats=np.zeros((3, 16), np.float32))
    cam = Camera(look_at((2, 0, 0.5), (0, 0, 0)), intrinsics_from_fov(45, W, H), W, H)
    d = cam.to_dict()
    (tmp_path / "cam.json").write_text(json.dumps(d))
    (tmp_path / "noK.json").write_text(json.dumps({k: v for k, v in d.items() if k != "K"}))
    hdri, out = str(studio_hdri("forest")), tmp_path / "out"
    common = ["--out", str(out), "--model", str(tmp_path / "no-model"), "--progress", "none"]
    cases = [
        ([str(tmp_path / "nocoords.npz"), "--env", hdri, "--camera", str(tmp_path / "cam.json")], "lacks ['coords']"),
        ([str(good), "--camera", str(tmp_path / "cam.json")], "needs --env MAP.hdr|.exr"),
        ([str(good), "--env", str(tmp_path / "no.hdr"), "--camera", str(tmp_path / "cam.json")], "no.hdr: no such file"),
        ([str(good), "--env", hdri, "--camera", str(tmp_path / "noK.json")], "'K' (3x3, pixels)"),
        ([str(good), "--env", hdri, "--camera", str(tmp_path / "cam.json"), "--frames", "1"], "--frames apply to a .blend"),
        ([str(good), "--env", hdri, "--camera", str(tmp_path / "cam.json"), "--strength", "-1"], "--strength -1.0"),
    ]  # fmt: skip
    for argv, message in cases:
        assert cli.main(["render", *argv, *common]) == 2, message
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not out.exists()
    # the .blend form refuses the asset form's options (before Blender starts)
    (tmp_path / "x.blend").write_bytes(b"")
    assert cli.main(["render", str(tmp_path / "x.blend"), "--env", hdri]) == 2
    assert "--env apply to an LH-SLAT .npz" in capsys.readouterr().err


def test_radiance_hdr_reads_as_blender_reads_it(tmp_path):
    """An .hdr that Blender writes (run-length encoded) reads back bit-identical to Blender's own
    decoding, and ``read_envmap`` takes it as it takes the EXR."""
    from near_blender.render.hdr import read_hdr

    img = bpy.data.images.load(str(studio_hdri("forest")), check_existing=False)
    img.pixels[0] = img.pixels[0]  # load the pixels, so the image can be saved in another format
    img.filepath_raw, img.file_format = str(tmp_path / "forest.hdr"), "HDR"
    img.save()
    back = bpy.data.images.load(str(tmp_path / "forest.hdr"), check_existing=False)
    w, h = back.size[:]
    buf = np.empty(w * h * back.channels, np.float32)
    back.pixels.foreach_get(buf)
    blender = buf.reshape(h, w, -1)[::-1, :, :3]
    ours = read_hdr(tmp_path / "forest.hdr")
    assert ours.shape == (512, 1024, 3) and np.array_equal(ours, blender)
    env = exr.read_envmap(tmp_path / "forest.hdr", 2.0, 0.5)
    assert np.array_equal(env.radiance, np.maximum(blender, 0) * np.float32(2.0)) and env.rotation_z == 0.5
    for im in (img, back):
        bpy.data.images.remove(im)
