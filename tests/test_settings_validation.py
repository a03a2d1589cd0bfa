"""Invalid settings are refused with the allowed values, never silently replaced (issue 21, 5)."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from tests.bpy_session import bpy
from tests.test_engine_assets import FakeEngine, _depsgraph, _scene

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

from near_addon.engine import model_manager  # noqa: E402
from near_addon.engine.session import RenderSession  # noqa: E402


def test_device_names_are_checked():
    assert model_manager.resolve_device("cpu") == "cpu" and model_manager.resolve_device("Auto") in (
        "cpu",
        "cuda",
    )
    with pytest.raises(NearError, match=r"Unknown NeAR device 'TPU': use one of AUTO, CPU, CUDA"):
        model_manager.resolve_device("TPU")
    if not torch.cuda.is_available():  # lower case is the same choice, and without a GPU an error
        with pytest.raises(NearError, match="no CUDA GPU"):
            model_manager.resolve_device("cuda")


@pytest.mark.parametrize("where", ["render_settings", "world"])
def test_a_nan_strength_is_a_clear_render_error(tmp_path, where):
    scene, _, _ = _scene(tmp_path)
    if where == "render_settings":
        scene.near.background_strength = math.nan
        expected = "Render Properties > NeAR > Background Strength"
    else:
        scene.world.node_tree.nodes["Background"].inputs["Strength"].default_value = math.nan
        expected = "World Properties > Surface > Strength"
    scene.update_tag()
    bpy.context.view_layer.update()  # F12 renders the evaluated scene: let it see the change
    eng = FakeEngine()
    RenderSession().render(eng, _depsgraph(scene))
    assert eng.errors and expected in eng.errors[0] and "nan" in eng.errors[0], eng.errors
    assert "begin_result" not in eng.calls


def test_hub_models_make_no_network_call_without_online_access(tmp_path, monkeypatch):
    import os
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    Spec = model_manager.ModelSpec
    for spec in (Spec("HUB", "someone/near-model", None, "CPU", online=False, cache_dir=str(tmp_path / "c")),
                 Spec("ENV", "someone/near-model", None, "CPU", online=False)):  # fmt: skip
        with pytest.raises(NearError, match="online access is off.*Allow Online Access"):
            model_manager.get_pipeline(spec)
    assert attempts == []  # not one DNS lookup or connection
    assert "HF_HUB_OFFLINE" not in os.environ  # offline for those loads only, not for the process
    # a mistyped relative folder reads like "org/repo": the error names both readings
    with pytest.raises(NearError, match=r"No local folder .*models/mine, and as a Hub repository"):
        model_manager.get_pipeline(Spec("ENV", "models/mine", None, "CPU", online=False))
    assert attempts == []


def test_the_camera_clip_range_is_honoured(tmp_path):
    """Gaussians outside the camera's Clip Start / End are culled, as EEVEE clips (issue 21, 5)."""
    from tests.test_engine_assets import _f12
    from tests.test_viewport import _asset

    scene, _, _ = _scene(tmp_path)
    _asset(tmp_path)  # a shell around (0.3, 0, 0), radius ~0.28; the camera is ~2.2 m away
    scene.render.film_transparent = True
    cam = scene.camera.data

    def coverage(name: str) -> float:
        return float(_f12(scene, tmp_path / f"{name}.exr")["ViewLayer.Alpha.A"].mean())

    full = coverage("default")
    assert full > 0.02
    cam.clip_start, cam.clip_end = 0.1, 1.0  # everything beyond 1 m: the asset is gone
    assert coverage("near_only") < 1e-4
    cam.clip_start, cam.clip_end = 5.0, 100.0  # everything nearer than 5 m: gone too
    assert coverage("far_only") < 1e-4
    cam.clip_start, cam.clip_end = 0.1, 100.0
    assert abs(coverage("again") - full) < 1e-6


def test_a_render_error_is_printed_once(tmp_path, capfd):
    import bpy

    scene, _, _ = _scene(tmp_path)
    scene.world = None
    capfd.readouterr()
    with pytest.raises(RuntimeError, match="The scene has no World"):
        bpy.ops.render.render()
    printed = capfd.readouterr()
    assert (printed.out + printed.err).count("The scene has no World") == 1
