"""3D Gaussian Splatting .ply export (issue 20): the standard fields and types, read back with
plyfile, and re-rendered from the export view it reproduces NeAR's light pass; the SH fit; the
placement; ``near export-ply`` and its errors (nothing written)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from near_blender import cli
from near_blender.data.slat_io import save_slat_npz
from near_blender.export.ply import ply_fields, read_splat_ply, write_splat_ply
from near_blender.export.splats import asset_splats, fit_sh, render_splats, sh_basis
from near_blender.models.gaussian_head import SH_C0
from near_blender.models.relightable import MIN_OPACITY
from near_blender.pipeline import NearPipeline
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at, write_camera_json
from near_blender.render.envmap import Environment
from near_blender.scene import PlacedAsset, SceneRenderer
from tests.tiny_pipeline import build_tiny_pipeline

FIXTURE = Path(__file__).parents[1] / "fixtures" / "default_heldout.npz"
STANDARD = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip


def _placement(angle_deg: float = 35.0, scale: float = 0.8, offset: tuple = (0.1, 0.2, -0.05)) -> np.ndarray:
    a = math.radians(angle_deg)
    M = np.eye(4)
    M[:3, :3] = scale * np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    M[:3, 3] = offset
    return M


@pytest.fixture(scope="module")
def default_scene():
    """The shipped model, the held-out fixture asset (rotated, scaled, moved) and its first view."""
    from near_blender.models.hub import bundled_model_folder

    fx = np.load(FIXTURE)
    renderer = SceneRenderer(NearPipeline.from_pretrained(bundled_model_folder()))
    asset = PlacedAsset("fixture", fx["coords"], fx["feats"], _placement())
    camera = Camera(fx["viewmat_0"], fx["K_0"], 64, 64, 0.1, 100.0)
    return renderer, asset, camera, Environment(fx["env"], name=str(fx["envmap"]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random pipeline, an ellipsoid asset (its .npz too) and a camera looking at it."""
    folder = build_tiny_pipeline(tmp_path_factory.mktemp("model"))
    g = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = g[np.linalg.norm((g - 31.5) / (10.0, 7.0, 9.0), axis=1) < 1.0]
    feats = np.random.default_rng(3).normal(size=(len(coords), 16)).astype(np.float32)
    npz = save_slat_npz(tmp_path_factory.mktemp("asset") / "egg.near.npz", coords, feats)
    camera = Camera(look_at((1.6, -1.2, 0.8), (0, 0, 0)), intrinsics_from_fov(40, 48, 40), 48, 40, 0.1, 50.0)
    env = Environment(np.random.default_rng(4).uniform(0.2, 2.0, (16, 32, 3)).astype(np.float32), name="rnd")
    renderer = SceneRenderer(NearPipeline.from_pretrained(folder))
    return renderer, PlacedAsset("egg", coords, feats, np.eye(4)), camera, env, folder, npz


def test_ply_has_the_standard_layout_and_reproduces_the_light_pass(default_scene, tmp_path):
    from plyfile import PlyData

    renderer, asset, camera, env = default_scene
    cloud = asset_splats(renderer, asset, camera, env)
    path = write_splat_ply(tmp_path / "asset.ply", cloud)

    ply = PlyData.read(str(path))  # the maintained PLY library reads it
    assert [e.name for e in ply.elements] == ["vertex"] and not ply.text and ply.byte_order == "<"
    props = ply["vertex"].properties
    assert [p.name for p in props] == STANDARD == ply_fields(0)
    assert {p.val_dtype for p in props} == {"f4"}  # float32, every one
    v = ply["vertex"].data
    assert v.dtype == np.dtype([(n, "<f4") for n in STANDARD]) and len(v) == len(cloud) > 1000

    # the values: f_dc is the degree-0 coefficient of the export view's radiance; logit / log / w-first
    g = renderer.gaussians([asset], camera.viewmat, env)
    keep = (g.opacities >= MIN_OPACITY).numpy()
    radiance = g.radiance.numpy()[keep]
    f_dc = np.stack([v[f"f_dc_{c}"] for c in range(3)], -1)
    np.testing.assert_allclose(0.5 + SH_C0 * f_dc, radiance, atol=1e-6)
    np.testing.assert_allclose(
        1 / (1 + np.exp(-v["opacity"].astype(np.float64))), g.opacities.numpy()[keep], atol=1e-6
    )
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], -1), g.means.numpy()[keep], atol=1e-6)
    np.testing.assert_allclose(
        np.stack([v[f"rot_{i}"] for i in range(4)], -1), g.quats.numpy()[keep], atol=1e-6
    )
    assert np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], -1)).min() > 0

    # re-rendered by our rasterizer from the export view = the NeAR light pass (F12's "hdr")
    near = renderer.render([asset], camera, env, passes=("light",))
    eps2d = renderer.model.renderer.rep.pixel_filter  # the model's pixel filter (a viewer's is 0.3)
    again = render_splats(read_splat_ply(path), camera, eps2d=eps2d)
    assert near["hdr"].mean() > 5e-3 and near["alpha"].mean() > 0.1  # the asset is in view, lit
    mae = float(np.abs(again["rgb"] - near["hdr"]).mean())
    assert mae < 1e-3 and mae < 0.01 * near["hdr"].mean(), mae  # measured: 1e-9
    print(f"MAE |.ply re-rendered - NeAR light pass| = {mae:.2e} (light pass mean {near['hdr'].mean():.3g})")
    assert float(np.abs(again["alpha"] - near["alpha"]).mean()) < 1e-3
    # the scales are the drawn (floored) ones: the decoded light scales alone leave holes
    raw = render_splats(
        type(cloud)(**{**cloud.__dict__, "scales": g.light_scales.numpy()[keep]}), camera, eps2d=eps2d
    )
    assert float(np.abs(raw["rgb"] - near["hdr"]).mean()) > 10 * max(mae, 1e-5)


def test_sh_basis_is_orthonormal_and_the_fit_keeps_view_zero():
    from near_blender.data.delighting import fibonacci_directions

    d = fibonacci_directions(20000)
    B = sh_basis(d, 3)
    gram = 4 * math.pi * B.T @ B / len(d)  # the real SH are orthonormal over the sphere
    np.testing.assert_allclose(gram, np.eye(16), atol=2e-3)
    # a known degree-2 colour function is recovered from 17 views, view 0 exactly
    rng = np.random.default_rng(0)
    true = rng.normal(scale=0.3, size=(50, 9, 3))
    dirs = fibonacci_directions(18)[:, None, :].repeat(50, axis=1)
    colors = 0.5 + np.einsum("vmk,mkc->vmc", sh_basis(dirs, 2), true)
    sh = fit_sh(colors, dirs, 2, ridge=1e-8)
    np.testing.assert_allclose(sh, true, atol=1e-3)
    sh_ridge = fit_sh(colors, dirs, 2)  # with the default ridge, view 0 is still exact
    got0 = 0.5 + np.einsum("mk,mkc->mc", sh_basis(dirs[0], 2), sh_ridge)
    np.testing.assert_allclose(got0, colors[0], atol=1e-5)


def test_sh_degree_follows_other_views_and_keeps_the_export_view(tiny, tmp_path):
    renderer, asset, camera, env, _, _ = tiny
    c0 = asset_splats(renderer, asset, camera, env, sh_degree=0)
    c1 = read_splat_ply(
        write_splat_ply(tmp_path / "sh1.ply", asset_splats(renderer, asset, camera, env, sh_degree=1))
    )
    assert c1.degree == 1 and c1.sh.shape == (len(c0), 4, 3)
    np.testing.assert_allclose(c1.colors(camera), c0.colors(camera), atol=1e-5)  # the export view, exactly
    keep = (renderer.gaussians([asset], camera.viewmat, env).opacities >= MIN_OPACITY).numpy()
    errors = []
    for eye in ((-1.5, 1.4, 0.5), (0.3, 2.0, -0.9)):  # views the fit never saw
        cam = Camera(look_at(eye, (0, 0, 0)), camera.K, camera.width, camera.height)
        truth = np.maximum(renderer.gaussians([asset], cam.viewmat, env).radiance.numpy()[keep], 0)
        errors.append([np.abs(c.colors(cam) - truth).mean() for c in (c0, c1)])
    e = np.array(errors)
    print("held-out views, per-Gaussian colour error, degree 0 vs 1:", e.tolist())
    assert (e[:, 1] < 0.9 * e[:, 0]).all(), e  # measured: 0.82-0.84 (a random model)


def test_placement_moves_the_gaussians(tiny):
    """The asset moved by M, with the camera and the world turned with it (a World Mapping rotation of
    -50 degrees turns the light by +50: the node rotates the lookup direction): the same Gaussians, moved."""
    renderer, asset, camera, env, _, _ = tiny
    M = _placement(angle_deg=50.0, scale=1.3, offset=(0.4, -0.3, 0.2))
    R, s, t = M[:3, :3] / 1.3, 1.3, M[:3, 3]
    cam_to_world = np.linalg.inv(camera.viewmat)
    moved_c2w = np.eye(4)
    moved_c2w[:3, :3], moved_c2w[:3, 3] = R @ cam_to_world[:3, :3], s * R @ cam_to_world[:3, 3] + t
    moved_cam = Camera(
        np.linalg.inv(moved_c2w), camera.K, camera.width, camera.height, s * camera.near, s * camera.far
    )
    a = asset_splats(renderer, asset, camera, env)
    b = asset_splats(
        renderer,
        PlacedAsset("moved", asset.coords, asset.feats, M),
        moved_cam,
        env.with_rotation(math.radians(-50.0)),
    )
    assert len(a) == len(b)
    np.testing.assert_allclose(b.means, a.means @ (s * R).T + t, atol=2e-5)
    np.testing.assert_allclose(b.scales, s * a.scales, rtol=1e-4)
    np.testing.assert_allclose(b.normals, a.normals @ R.T, atol=1e-4)
    np.testing.assert_allclose(b.sh, a.sh, atol=1e-4)


def test_cli_export_ply_writes_pbr_and_refuses_bad_input(tiny, tmp_path, capsys):
    renderer, asset, camera, env, folder, npz = tiny
    from near_blender.render.exr import write_exr

    hdr = tmp_path / "env.exr"
    write_exr(hdr, {"R": env.radiance[..., 0], "G": env.radiance[..., 1], "B": env.radiance[..., 2]})
    cam_json = tmp_path / "camera.json"
    write_camera_json(camera, cam_json)
    out = tmp_path / "out" / "egg.ply"
    base = [
        "export-ply",
        str(npz),
        "--env",
        str(hdr),
        "--model",
        str(folder),
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    assert cli.main([*base, "--camera", str(cam_json), "--sh-degree", "1", "--pbr", "--out", str(out)]) == 0
    from plyfile import PlyData

    ply = PlyData.read(str(out))
    assert [p.name for p in ply["vertex"].properties] == ply_fields(1, pbr=True)
    assert ply_fields(1, pbr=True)[-5:] == [
        "base_color_0",
        "base_color_1",
        "base_color_2",
        "roughness",
        "metallic",
    ]
    cloud = read_splat_ply(out)
    expect = asset_splats(renderer, asset, camera, Environment(env.radiance, name="x"))
    assert len(cloud) == len(expect)
    np.testing.assert_allclose(cloud.roughness, expect.roughness, atol=1e-6)
    np.testing.assert_allclose(cloud.base_color, expect.base_color, atol=1e-6)
    assert "egg.ply" in capsys.readouterr().out

    # without --camera: the default front view; the .ply lands beside the asset
    assert cli.main(base) == 0
    assert (npz.parent / "egg.near.ply").is_file()

    # bad input: clear errors, nothing written
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    bad = tmp_path / "bad"
    bad.mkdir()
    empty = save_slat_npz(bad / "empty.npz", np.zeros((0, 3), np.int32), np.zeros((0, 16), np.float32))
    np.savez(bad / "other.npz", something=np.zeros(3))
    opts = base[2:]
    cases = [
        ([*base, "--out", str(blocker / "x.ply")], "a_file"),  # an unwritable path
        ([*base, "--out", str(bad / "x.txt")], "ending in .ply"),
        (["export-ply", str(bad / "other.npz"), *opts], "lacks"),  # no LH-SLAT in it
        (["export-ply", str(bad / "missing.npz"), *opts], "No such LH-SLAT"),
        (["export-ply", str(empty), *opts], "no voxels"),
    ]
    for args, words in cases:
        capsys.readouterr()
        assert cli.main(args) == 2, args
        assert words in capsys.readouterr().err, args
    assert sorted(p.name for p in bad.iterdir()) == ["empty.npz", "other.npz"]
    assert blocker.read_text() == "x"
    assert not any(".tmp-" in p.name for p in tmp_path.rglob("*"))
