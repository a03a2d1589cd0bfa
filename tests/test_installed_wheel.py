"""The installed wheel works without a source checkout (docs/architecture.md, "Packaging").

The test copies the source tree, builds the ``near-blender`` wheel from the copy, installs it with
its dependencies into a fresh virtual environment outside the checkout (torch first, as
``make setup`` does, then the wheel and the bpy module with the pins of ``requirements.txt``), and
from a working folder that holds no checkout runs the CLI that starts Blender-side scripts:
``near datagen`` (operators/datagen/headless.py) and ``near render FILE.blend`` (engine/batch.py).
A checkout-only lookup of those scripts, a script left out of the wheel or a package missing from
its dependencies fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the Makefile's pin
LEFT_OUT = {".venv", ".git", "data", "runs", "out", "build", "dist", ".pytest_cache", ".ruff_cache"}

pytestmark = [pytest.mark.slow, pytest.mark.bpy]


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def _source_copy(dst: Path) -> Path:
    """The tracked and untracked source (no environments, datasets, runs or build outputs)."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO
        return {n for n in names if (top and n in LEFT_OUT) or n == "__pycache__"}

    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (outside the checkout) holding the wheel and its dependencies; returns its bin."""
    pytest.importorskip("bpy")
    root = tmp_path_factory.mktemp("wheel")
    src = _source_copy(root / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
          str(src)], root, 600)  # fmt: skip
    (wheel,) = (root / "dist").glob("near_blender-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], root, 300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, TORCH], root, 900)
    _run([*pip, str(wheel), "bpy==5.0.1", "-c", str(REPO / "requirements.txt")], root, 900)
    return venv / "bin"


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that points into the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEAR_MODEL", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def test_wheel_holds_the_extension_scripts_and_imports_outside_the_checkout(installed, tmp_path):
    code = (
        "import near_blender, near_addon, importlib.util as u; "
        "from near_blender.utils.blender_job import extension_script; "
        "print(near_blender.__file__); print(extension_script('operators/datagen/headless.py')); "
        "print(extension_script('engine/batch.py')); print(u.find_spec('setup'))"
    )
    out = _run([str(installed / "python"), "-c", code], tmp_path, 120, _clean_env()).splitlines()
    site = str(installed.parent / "lib")
    assert all(line.startswith(site) for line in out[:3]), out  # the venv's copies, not the checkout's
    assert out[3] == "None"  # setup.py is not shipped as a module


def _scene_with_asset(folder: Path, sidecar: Path) -> Path:
    """A saved .blend: the forest HDRI, a camera looking at a NeAR asset whose sidecar is ``sidecar``."""
    from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
    from tests.bpy_session import addon_with_model, bpy, empty_scene, hdri_world, import_addon

    addon = import_addon()
    from near_addon.operators.import_image import create_asset_object

    with addon_with_model(None):  # registered, so that the asset's NeAR properties exist
        scene = empty_scene()
        hdri_world(scene)
        cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        scene.collection.objects.link(cam_obj)
        scene.camera = cam_obj
        eye = np.array([2.4, 0.0, 0.6])
        cam = Camera(look_at(eye, np.zeros(3)), intrinsics_from_fov(45, 40, 40), 40, 40, 0.1, 100)
        addon.engine.scene_bridge.apply_camera(cam, cam_obj, scene)
        blend = folder / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        create_asset_object(bpy.context, "asset", bpy.path.relpath(str(sidecar)), np.eye(4), "input.png")
        scene.render.engine = "NEAR"
        scene.render.film_transparent = True
        scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
        scene.render.image_settings.color_depth = "32"
        scene.frame_start = scene.frame_end = 1
        bpy.ops.wm.save_mainfile()
    return blend


def test_datagen_and_render_from_the_installed_wheel(installed, tmp_path):
    """``near datagen`` and ``near render`` from the venv's ``near``, run outside the checkout
    (Cycles: EEVEE runs on software OpenGL on CPU machines, ~15x slower per view)."""
    env, near = _clean_env(), str(installed / "near")
    data = tmp_path / "data"
    out = _run([near, "datagen", "--out", str(data), "--procedural", "1", "--preset", "tiny", "--resolution",
                "32", "--engine", "cycles", "--progress", "none"], tmp_path, 1200, env)  # fmt: skip
    assert "1 done, 0 failed" in out, out
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    assets = [r for r in rows if r["kind"] == "asset"]
    assert len(assets) == 1 and assets[0]["status"] == "done", rows
    (asset,) = (data / "assets").iterdir()
    # the generated asset's ground-truth LH-SLAT + base-colour SLAT (what the bundled model reads,
    # as training reads it), rendered as a NeAR asset by the installed bundled model
    from near_blender.data.dataset import NearDataset
    from near_blender.data.slat_io import save_slat_npz

    coords, feats = NearDataset(data).slat_features(asset.name, with_bc=True)
    save_slat_npz(tmp_path / "asset.near.npz", coords, feats)
    blend = _scene_with_asset(tmp_path, tmp_path / "asset.near.npz")
    frames = tmp_path / "frames"
    out = _run([near, "render", str(blend), "--out", str(frames), "--resolution", "40x40", "--progress", "none"],
               tmp_path, 900, env)  # fmt: skip
    assert "1 rendered, 0 skipped" in out, out
    from near_blender.render import exr

    (frame,) = frames.glob("*.exr")
    ch = exr.read_exr_channels(frame)
    alpha = ch["ViewLayer.Alpha.A"]
    assert alpha.shape == (40, 40)
    assert 0.02 < float(alpha.mean()) < 0.9  # the asset is in view and does not fill the frame
    rgb = np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGB"], -1)
    assert np.isfinite(rgb).all() and float(rgb[alpha > 0.5].mean()) > 1e-3  # lit, not black
