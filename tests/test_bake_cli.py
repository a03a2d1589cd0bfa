"""``near bake ASSET.npz --prior MESH`` (issue 20): Blender bakes the asset onto the mesh file and
writes a textured .glb; bad input is refused before Blender starts, nothing written."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from near_blender import cli
from near_blender.data.slat_io import save_slat_npz
from near_blender.data.voxelize import voxelize_prior
from tests.bpy_session import studio_hdri
from tests.tiny_pipeline import build_tiny_pipeline

pytestmark = pytest.mark.bpy


def _glb_json(path) -> dict:
    """The JSON chunk of a glTF binary."""
    data = path.read_bytes()
    assert data[:4] == b"glTF"
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + length])


def test_near_bake_writes_a_textured_glb_and_refuses_bad_input(tmp_path, capsys, monkeypatch):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    prior = tmp_path / "ball.ply"
    mesh.export(prior)  # PLY: Z up, read as Blender reads it
    coords, matrix = voxelize_prior(np.asarray(mesh.triangles))
    npz = save_slat_npz(
        tmp_path / "ball.near.npz",
        coords,
        np.random.default_rng(0).normal(size=(len(coords), 16)).astype(np.float32),
    )
    with np.load(npz, allow_pickle=False) as d:
        np.savez(npz, **dict(d), matrix_world=matrix)
    model = build_tiny_pipeline(tmp_path / "model")
    env = str(studio_hdri("forest"))
    base = ["bake", str(npz), "--prior", str(prior), "--env", env, "--model", str(model)]
    assert cli.main([*base, "--size", "32"]) == 0
    out = tmp_path / "ball.glb"
    assert "ball.glb" in capsys.readouterr().out and out.is_file()
    gltf = _glb_json(out)
    (material,) = gltf["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    assert len(gltf["images"]) == 2  # base colour; roughness + metallic packed as glTF wants them

    # refused before Blender starts; nothing written
    import near_blender.utils.blender_job as job

    monkeypatch.setattr(job, "run_blender_events", lambda *a: pytest.fail("Blender started"))
    (tmp_path / "blocker").write_text("x")
    cases = [
        ([*base, "--out", str(tmp_path / "blocker" / "x.glb")], "blocker: it is a file"),
        ([*base, "--out", str(tmp_path / "x.gltf")], "ending in .glb"),
        (["bake", str(npz), "--prior", str(tmp_path / "ball.fbx"), "--env", env], "--prior ball.fbx: use a"),
        (["bake", str(tmp_path / "none.npz"), "--prior", str(prior), "--env", env], "No such LH-SLAT"),
        ([*base, "--size", "4"], "--size 4"),
    ]
    for args, words in cases:
        capsys.readouterr()
        assert cli.main(args) == 2, args
        assert words in capsys.readouterr().err, args
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".glb", ".gltf")) == ["ball.glb"]
