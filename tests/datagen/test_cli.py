"""Acceptance tests of ``near datagen`` end to end (real subprocesses, real Cycles renders).

A micro dataset (2 procedural assets, 2 views, 2 lights, 32 px) is made once; the resumed-after-
kill run and the three shards must reproduce it: the same files, manifests, cameras, lights and
voxels exactly, and the same pixels. "Same pixels" is checked as bit-identical for >= 99.5 % of
all values and within one half-float step for the rest: Cycles 5.0.1 on CPU, with its fixed seed,
no denoiser and one thread, still differs between processes by up to ~4e-5 (float32) on a few
dozen pixels of a lit render (measured even at 1 sample per pixel and pinned to one core), which
half-float rounding turns into rare one-step differences. Bad inputs are recorded per asset while
the batch goes on.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from near_blender.data.backproject import sample_bilinear
from near_blender.data.config import DatagenConfig
from near_blender.data.layout import RUN_KEY
from near_blender.data.sampling import AREA_DISTANCE_RANGE, AREA_POWER_RANGE_W, plan_asset
from near_blender.data.views import SET_PASSES, read_view
from near_blender.data.voxelize import voxel_centres
from near_blender.render.camera import Camera
from near_blender.render.exr import read_envmap, read_exr_channels, write_exr
from near_blender.utils.atomic import temporaries

pytest.importorskip("bpy")
pytestmark = pytest.mark.bpy

REPO = Path(__file__).resolve().parents[2]


def strip_run_fields(entry: dict) -> dict:
    """A manifest entry without its per-run fields (times, host, shard), for comparing datasets."""
    return {k: v for k, v in entry.items() if k != RUN_KEY}


SPHERE = "proc:sphere,roughness=1,metallic=0,specular=0,base_color=0.7/0.3/0.2"
MICRO = ["--procedural", "1", "--assets", SPHERE, "--engine", "cycles", "--resolution", "32", "--samples", "8",
         "--no-denoise", "--homog-views", "2", "--shaded-views", "2", "--cond-views", "2", "--input-views", "2",
         "--relit-views", "2", "--relit-lights", "2", "--threads", "1"]  # fmt: skip
EXPECTED_SETS = {"homog": 2, "shaded": 2, "cond": 2, "inputs": 2, "relit": 4}


def near(*args: str, popen: bool = False, **kw):
    cmd = [sys.executable, "-m", "near_blender.cli", "datagen", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if popen:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
        )
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro")
    r = near("--out", out, *MICRO, "--progress", "none")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "2 done, 0 failed" in r.stdout
    return out


def asset_dirs(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((root / "assets").iterdir())}


def manifest(root: Path) -> list[dict]:
    return [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]


def test_micro_dataset_every_file_exists_and_parses(micro):
    entries = manifest(micro)
    assets = [e for e in entries if e["kind"] == "asset"]
    envs = [e for e in entries if e["kind"] == "envmap"]
    assert [e["status"] for e in assets] == ["done", "done"] and len(envs) == 8
    assert all(e["status"] == "done" for e in envs)  # bundled maps: tiny negatives are clamped
    for e in envs:
        env = read_envmap(micro / e["file"])
        assert env.width == 2 * env.height == 1024
    dirs = asset_dirs(micro)
    assert set(dirs) == {
        "proc-0000-torus",
        next(e["id"] for e in assets if e["id"].startswith("proc-uv_sphere")),
    }
    for aid, d in dirs.items():
        cams = json.loads((d / "cameras.json").read_text())["views"]
        lights = json.loads((d / "lights.json").read_text())["views"]
        assert [c["file"] for c in cams] == [lt["file"] for lt in lights]
        counts = {}
        for c in cams:
            counts[c["set"]] = counts.get(c["set"], 0) + 1
            view = read_view(d / c["file"])
            assert set(view) == set(SET_PASSES[c["set"]]), c["file"]
            assert view["rgba"].shape == (32, 32, 4)
            assert all(np.isfinite(a).all() for a in view.values())
            cam = Camera.from_dict(c["camera"])
            np.testing.assert_allclose(np.linalg.inv(cam.viewmat) @ np.diag([1, -1, -1, 1]),
                                       c["blender"]["matrix_world"], atol=1e-5)  # fmt: skip
            assert read_exr_channels(d / c["file"])["R"].dtype == np.float32  # half on disk, read as float32
        assert counts == EXPECTED_SETS
        on_disk = sorted(p.relative_to(d).as_posix() for p in d.rglob("*.exr"))
        assert on_disk == sorted(c["file"] for c in cams)
        coords = np.load(d / "mesh_voxels.npz")["coords"]
        assert coords.dtype == np.uint8 and coords.shape[1] == 3 and coords.max() < 64 and len(coords) > 1000
        for name in ("slat_lh", "slat_bc", "slat_shaded"):
            z = np.load(d / f"{name}.npz")
            assert sorted(z.files) == ["coords", "feats"]
            np.testing.assert_array_equal(z["coords"], coords)
            assert z["feats"].dtype == np.float32 and z["feats"].shape == (len(coords), 8)
            assert np.isfinite(z["feats"]).all()
        asset = json.loads((d / "asset.json").read_text())
        assert asset["voxels"] == len(coords) and asset["renders"] == EXPECTED_SETS
        status = json.loads((d / "status.json").read_text())
        assert strip_run_fields(status) == strip_run_fields(next(e for e in assets if e["id"] == aid))
    assert temporaries(micro) == []


def test_alpha_matches_the_projection_through_the_camera_json(micro):
    """Voxels reprojected with cameras.json land on the rendered silhouette.

    Measured per voxel footprint (some corner of the voxel on alpha > 0.5, alpha interpolated):
    98-99.5 % in every view here, while a camera off by one pixel gives 82-92 % (checked below).
    The bare voxel *centre* lands on alpha > 0.5 for only 85-91 % on these curved assets (a cube
    reaches ~100 %): centres of surface voxels lie up to half a voxel diagonal off the surface, so
    ~7 % of them sit outside a curved silhouette, and at 32 px a pixel is three voxels wide.
    """
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]) / 64

    def footprint(cam, pts, a, shift):
        hit = np.zeros(len(pts), bool)
        for k in corners:
            uv, _ = cam.project(pts + k)
            hit |= sample_bilinear(a, uv + shift, 32, 32)[:, 0] > 0.5
        return hit.mean()

    centre_rates = []
    for d in asset_dirs(micro).values():
        pts = voxel_centres(np.load(d / "mesh_voxels.npz")["coords"])
        for c in json.loads((d / "cameras.json").read_text())["views"]:
            cam = Camera.from_dict(c["camera"])
            a = read_view(d / c["file"])["rgba"][..., 3:4].astype(np.float64)
            assert footprint(cam, pts, a, (0, 0)) > 0.975, c["file"]
            assert footprint(cam, pts, a, (1, 0)) < 0.95 and footprint(cam, pts, a, (0, 1)) < 0.95
            uv, z = cam.project(pts)
            px = np.clip(np.floor(uv).astype(int), 0, 31)
            centre_rates.append(float((a[px[:, 1], px[:, 0], 0] > 0.5).mean()))
    assert np.mean(centre_rates) > 0.8, centre_rates


def _sphere_dir(micro: Path) -> Path:
    return next(d for k, d in asset_dirs(micro).items() if k.startswith("proc-uv_sphere"))


def test_homogenized_diffuse_asset_equals_base_colour_times_ambient_irradiance(micro):
    base = np.array([0.7, 0.3, 0.2])
    d = _sphere_dir(micro)
    for lt in json.loads((d / "lights.json").read_text())["views"][:2]:
        f, light = lt["file"], lt["lighting"]
        assert light["type"] == "uniform"
        irradiance = math.pi * np.array(light["color"]) * light["strength"]  # uniform radiance L: E = pi L
        v = read_view(d / f)
        # fully covered pixels away from the silhouette: on a convex sphere nothing occludes them (at
        # the rim, rays leaving a smooth-shaded low-poly surface at grazing angles can hit it again)
        full = v["rgba"][..., 3] > 0.999
        full[1:-1, 1:-1] &= full[:-2, 1:-1] & full[2:, 1:-1] & full[1:-1, :-2] & full[1:-1, 2:]
        assert full.sum() > 120
        want = base * irradiance / math.pi  # Lambert: albedo / pi * E
        rel = np.abs(v["rgba"][..., :3][full] / want - 1).max(axis=1)
        # 8 samples per pixel: a rare sample leaving the smooth-shaded (faceted) sphere below its
        # geometric surface hits the sphere again, darkening one pixel by 1/8
        assert (rel < 0.05).mean() > 0.99, np.sort(rel)[-5:]
        np.testing.assert_allclose(v["rgba"][..., :3][full].mean(axis=0), want, rtol=0.01)
        np.testing.assert_allclose(v["base_color"][full], np.broadcast_to(base, (full.sum(), 3)), atol=1e-3)


def test_roughness_and_metallic_aovs_equal_the_material_inputs(micro):
    for d in asset_dirs(micro).values():
        mat = json.loads((d / "asset.json").read_text())["source"]["spec"]["material"]
        assert mat["texture"] is None
        for f in sorted(p for p in d.rglob("*.exr") if p.parent.name in ("homog", "relit")):
            v = read_view(f)
            full = v["rgba"][..., 3] > 0.999
            np.testing.assert_allclose(v["roughness"][full], mat["roughness"], atol=1e-3)  # half precision
            np.testing.assert_allclose(v["metallic"][full], mat["metallic"], atol=1e-3)


def test_random_lighting_follows_the_configured_ranges_and_is_reproducible(micro):
    cfg = DatagenConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in json.loads((micro / "config.json").read_text())["generation"].items()
                           if k not in ("assets", "envmaps")})  # fmt: skip
    pool = sorted(e["id"].split(":", 1)[1] for e in manifest(micro) if e["kind"] == "envmap")
    for aid, d in asset_dirs(micro).items():
        lights = json.loads((d / "lights.json").read_text())["views"]
        planned = plan_asset(aid, cfg, pool, [])
        assert [lt["lighting"] for lt in lights] == [json.loads(json.dumps(t.lighting)) for t in planned]
        cams = json.loads((d / "cameras.json").read_text())["views"]
        for c, lt in zip(cams, lights, strict=True):
            L, p = lt["lighting"], c["params"]
            if c["set"] == "inputs":
                assert (
                    -135 <= p["yaw_deg"] <= -45 and -10 <= p["pitch_deg"] <= 45 and 10 <= p["fov_deg"] <= 70
                )
                assert L["mode"] in ("six_area", "hemisphere_area", "envmap")
            if L["type"] == "lights" and L["mode"] != "trellis_rig":
                assert len(L["lights"]) == 6 if L["mode"] == "six_area" else 1 <= len(L["lights"]) <= 3
                for s in L["lights"]:
                    assert AREA_POWER_RANGE_W[0] <= s["power_w"] <= AREA_POWER_RANGE_W[1]
                    assert AREA_DISTANCE_RANGE[0] <= s["distance"] <= AREA_DISTANCE_RANGE[1]
            if L["type"] == "envmap":
                assert L["envmap"] in pool and 0 <= L["rotation_z"] < 2 * math.pi


def compare_datasets(a: Path, b: Path) -> None:
    """Same file set, manifests apart from per-run fields, json and voxel files; pixels (and the
    SLAT features computed from them) identical up to Cycles' cross-process noise (see above)."""
    skip = {"logs", ".manifest.lock"}

    def files(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and p.relative_to(root).parts[0] not in skip)  # fmt: skip

    assert files(a) == files(b)
    assert [strip_run_fields(e) for e in manifest(a)] == [strip_run_fields(e) for e in manifest(b)]
    same = total = 0
    for rel in files(a):
        pa, pb = a / rel, b / rel
        if rel.endswith(".exr"):
            ca, cb = read_exr_channels(pa), read_exr_channels(pb)
            assert set(ca) == set(cb)
            for k in ca:
                np.testing.assert_allclose(
                    ca[k], cb[k], rtol=1e-3, atol=1e-4, err_msg=f"{rel}:{k}"
                )  # 1 half step
                same += int((ca[k] == cb[k]).sum())
                total += ca[k].size
        elif rel.endswith(".npz"):
            za, zb = np.load(pa), np.load(pb)
            assert za.files == zb.files
            for k in za.files:
                if k == "feats":
                    np.testing.assert_allclose(za[k], zb[k], rtol=1e-3, atol=1e-4, err_msg=f"{rel}:{k}")
                else:
                    np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{rel}:{k}")
        elif rel.endswith("status.json") or rel == "manifest.jsonl":
            continue  # compared without their per-run fields
        else:
            assert pa.read_bytes() == pb.read_bytes(), rel
    assert same / total >= 0.995, f"only {same / total:.4%} of pixel values are bit-identical"


def test_kill_mid_asset_then_resume_equals_an_uninterrupted_run(micro, tmp_path):
    out = tmp_path / "killed"
    proc = near("--out", out, *MICRO, "--progress", "none", popen=True, start_new_session=True)
    deadline = time.time() + 300
    second = None
    try:
        while time.time() < deadline and proc.poll() is None:
            dirs = sorted((out / "assets").glob("*")) if (out / "assets").exists() else []
            if len(dirs) == 2 and len(list(dirs[1].rglob("*.exr"))) >= 3:
                second = dirs[1]
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job: the CLI and its Blender process
        proc.wait()
    assert second is not None, "the run finished before it could be killed"
    assert not (second / "status.json").exists()  # killed mid-asset
    r = near("--out", out, *MICRO, "--progress", "none")
    assert r.returncode != 0 and "--resume" in r.stderr  # a fresh run refuses to mix with old work
    r = near("--out", out, *MICRO, "--progress", "none", "--resume")
    assert r.returncode == 0, r.stderr
    assert "1 done, 0 failed, 1 skipped" in r.stdout
    assert temporaries(out) == []  # no half-written file survives
    compare_datasets(micro, out)


def test_three_shards_together_equal_the_unsharded_run(micro, tmp_path):
    out = tmp_path / "sharded"
    for i in range(3):
        r = near("--out", out, *MICRO, "--progress", "none", "--shard", f"{i}/3")
        assert r.returncode == 0, r.stderr
    compare_datasets(micro, out)


def _fake_blender(tmp_path: Path) -> Path:
    """Stands in for a Blender binary: checks the command line Blender gets, runs the bpy module."""
    p = tmp_path / "blender"
    p.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "-b" ] || exit 96\n'
        "shift\n"
        'if [ "$1" = "--threads" ]; then threads="$2"; shift 2; fi\n'
        '[ "$1" = "--python-exit-code" ] && [ "$2" = "1" ] && [ "$3" = "--python" ] || exit 97\n'
        'script="$4"; shift 4\n'
        '[ "$1" = "--" ] || exit 98\n'
        "shift\n"
        f'exec "{sys.executable}" "$script" "$@"\n'
    )
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def test_bad_inputs_are_recorded_per_asset_and_the_batch_goes_on(tmp_path):
    bad = tmp_path / "inputs"
    (bad / "empty").mkdir(parents=True)
    (bad / "broken.glb").write_bytes(b"\x00not a glb" * 40)
    (bad / "nomesh.gltf").write_text(json.dumps({"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}],
                                                 "scene": 0, "nodes": [{"name": "empty"}]}))  # fmt: skip
    envs = tmp_path / "envs"
    envs.mkdir()
    write_exr(envs / "square.exr", np.ones((16, 16, 3), np.float32))
    (envs / "corrupt.exr").write_bytes(b"v/1\x01" + b"\x00" * 200)
    studio = (
        Path(__import__("bpy").utils.system_resource("DATAFILES")) / "studiolights" / "world" / "studio.exr"
    )
    out = tmp_path / "out"
    r = near("--out", out, "--assets", bad / "broken.glb", bad / "nomesh.gltf", bad / "empty", "proc:cube",
             "--envmaps", envs / "square.exr", envs / "corrupt.exr", studio, "--engine", "cycles", "--resolution",
             "16", "--samples", "2", "--homog-views", "1", "--shaded-views", "0", "--cond-views", "0",
             "--input-views", "1", "--relit-views", "1", "--relit-lights", "1", "--threads", "1", "--blender",
             _fake_blender(tmp_path),
             "--progress", "none")  # fmt: skip
    assert r.returncode == 1, r.stderr + r.stdout  # the batch went on, but the run reports its failures
    assert "1 done, 3 failed" in r.stdout
    assert "5 item(s) failed" in r.stderr and "--resume --retry-failed" in r.stderr
    m = {e["id"]: e for e in manifest(out)}
    by_label = {Path(e["source"].get("label", "")).name: e for e in m.values() if e["kind"] == "asset"}
    assert "cannot import this file" in by_label["broken.glb"]["error"]
    assert "no mesh with faces" in by_label["nomesh.gltf"]["error"]
    assert "contains no asset files" in by_label["empty"]["error"]
    assert by_label["proc:cube"]["status"] == "done"
    assert "twice as wide as tall" in m["envmap:square"]["error"] and m["envmap:square"]["status"] == "failed"
    assert "cannot be read" in m["envmap:corrupt"]["error"]
    assert m["envmap:studio"]["status"] == "done"
    assert "broken.glb" in r.stderr  # failures are listed by the CLI too
    for e in by_label.values():  # a failed asset keeps only its status
        files = [p.name for p in (out / "assets" / e["id"]).iterdir()]
        assert files == ["status.json"] if e["status"] == "failed" else "status.json" in files
    assert (out / "logs" / "datagen-shard-0-of-1.log").read_text().startswith("$ ")


def test_cli_rejects_bad_options_before_starting_blender(tmp_path):
    r = near("--out", tmp_path / "x", "--progress", "none")
    assert r.returncode == 2 and "Nothing to render" in r.stderr
    r = near("--out", tmp_path / "x", "--procedural", "1", "--shard", "3/3")
    assert r.returncode == 2 and "0 <= i < N" in r.stderr
    r = near("--out", tmp_path / "x", "--procedural", "1", "--blender", tmp_path / "nope")
    assert r.returncode == 2 and "not an executable" in r.stderr
    r = near("--out", tmp_path / "x", "--procedural", "1", "--features", "dinov2", "--engine", "cycles",
             "--progress", "none")  # fmt: skip
    assert r.returncode == 2 and "colour_normal" in r.stderr
