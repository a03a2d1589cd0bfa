"""``near import-image``: stage 1 without Blender, from an image file and a mesh / voxel prior.

(That mesh files read as Blender's importers read them is checked against real bpy in
tests/test_import_prior_meshes.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from near_blender import NearError, cli
from near_blender.commands.import_image import prior_voxels, read_rgba, srgb_to_linear
from near_blender.data.mesh_io import Y_UP_TO_Z_UP, read_mesh_triangles
from near_blender.data.slat_io import load_slat_npz
from near_blender.data.voxelize import voxelize_triangles
from near_blender.models.tiny_pipeline import build_tiny_pipeline

# a 2 x 1 x 1 box centred at (3, 0, 1) when read Z-up (--up z), as quads
BOX_OBJ = """v 2 -0.5 0.5
v 4 -0.5 0.5
v 4 0.5 0.5
v 2 0.5 0.5
v 2 -0.5 1.5
v 4 -0.5 1.5
v 4 0.5 1.5
v 2 0.5 1.5
f 1 2 3 4
f 5 8 7 6
f 1 5 6 2
f 2/1 6/1 7/1 3/1
f 3 7 8 4
f -8 -4 -1 -5
"""


def _png(path, alpha=True):  # noqa: ANN001
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (200, 100, 50, 255)
    if not alpha:
        rgba[..., 3] = 255
    Image.fromarray(rgba if alpha else rgba[..., :3]).save(path)
    return path


def test_image_reading_is_premultiplied_linear_and_needs_a_mask(tmp_path):
    rgba = read_rgba(_png(tmp_path / "a.png"))
    assert rgba.shape == (32, 32, 4) and rgba[0, 0, 3] == 0 and rgba[16, 16, 3] == 1
    np.testing.assert_allclose(rgba[16, 16, :3], srgb_to_linear(np.array([200, 100, 50]) / 255), rtol=1e-6)
    assert abs(float(srgb_to_linear(np.array(0.5))) - 0.21404) < 1e-4  # the standard curve
    assert np.all(rgba[0, 0, :3] == 0)
    with pytest.raises(NearError, match="no transparent background"):
        read_rgba(_png(tmp_path / "b.png", alpha=False))
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(NearError, match="Cannot read the image c.png"):
        read_rgba(tmp_path / "c.png")


def test_obj_prior_is_voxelized_in_the_canonical_box_with_its_placement(tmp_path):
    (tmp_path / "box.obj").write_text(BOX_OBJ)
    tris = read_mesh_triangles(tmp_path / "box.obj", up="z")
    assert tris.shape == (12, 3, 3)
    coords, M = prior_voxels(tmp_path / "box.obj", "z")
    # canonical box: centred, largest side (x: 2 units) -> 1; so x spans the grid, y/z half of it
    assert coords[:, 0].min() == 0 and coords[:, 0].max() == 63
    assert 15 <= coords[:, 1].min() <= 17 and 46 <= coords[:, 1].max() <= 48
    np.testing.assert_allclose(M @ [0.5, 0.5, 0.5, 1], [4, 1, 2, 1], atol=1e-9)  # uniform scale 2
    np.testing.assert_allclose(M @ [0, 0, 0, 1], [3, 0, 1, 1], atol=1e-9)
    canon = (tris - [3, 0, 1]) / 2.0
    assert np.array_equal(coords, voxelize_triangles(canon))
    # by default an OBJ is Y-up, as Blender's OBJ importer reads it: (x, y, z) -> (x, -z, y)
    np.testing.assert_array_equal(read_mesh_triangles(tmp_path / "box.obj"), tris @ Y_UP_TO_Z_UP.T)
    coords_y, M_y = prior_voxels(tmp_path / "box.obj")
    np.testing.assert_allclose(M_y @ [0, 0, 0, 1], [3, -1, 0, 1], atol=1e-9)
    assert np.array_equal(coords_y, voxelize_triangles((tris @ Y_UP_TO_Z_UP.T - [3, -1, 0]) / 2.0))
    (tmp_path / "nofaces.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(NearError, match="no faces"):
        prior_voxels(tmp_path / "nofaces.obj")
    with pytest.raises(
        NearError, match=r"unsupported format '\.fbx'; use a mesh \(\.obj, \.gltf, \.glb, \.ply, \.stl\)"
    ):
        (tmp_path / "x.fbx").write_text("Kaydara FBX Binary")
        prior_voxels(tmp_path / "x.fbx")
    with pytest.raises(NearError, match="--up applies to mesh priors"):
        np.savez(tmp_path / "v.npz", coords=coords)
        prior_voxels(tmp_path / "v.npz", "y")
    assert np.array_equal(prior_voxels(tmp_path / "v.npz")[0], coords)


def test_cli_writes_the_lh_slat_sidecar(tmp_path, capsys):
    model = build_tiny_pipeline(tmp_path / "model")
    (tmp_path / "box.obj").write_text(BOX_OBJ)
    out = tmp_path / "asset.near.npz"
    argv = ["import-image", str(_png(tmp_path / "a.png")), "--prior", str(tmp_path / "box.obj"), "--up", "z"]
    assert cli.main([*argv, "--out", str(out), "--model", str(model), "--steps", "2"]) == 0
    coords, feats = load_slat_npz(out)
    assert np.array_equal(coords, prior_voxels(tmp_path / "box.obj", "z")[0])
    assert feats.shape == (len(coords), 16) and np.isfinite(feats).all()
    with np.load(out) as d:
        np.testing.assert_allclose(d["matrix_world"] @ [0, 0, 0, 1], [3, 0, 1, 1], atol=1e-9)
    assert cli.main([*argv, "--out", str(tmp_path / "x.npz"), "--model", str(tmp_path / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


# three triangles of an open tetrahedron, in no symmetric position (an axis swap would show)
TRIS = np.array(
    [
        [[0.1, -0.2, 0.3], [1.25, 0.05, -0.4], [0.3, 0.9, 0.7]],
        [[0.1, -0.2, 0.3], [0.3, 0.9, 0.7], [-0.6, 0.2, 1.1]],
        [[1.25, 0.05, -0.4], [0.3, 0.9, 0.7], [-0.6, 0.2, 1.1]],
    ]
)


def _write_binary_stl(path, tris):  # noqa: ANN001
    rec = np.zeros(len(tris), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec["v"] = tris
    path.write_bytes(b"near test".ljust(80, b" ") + np.uint32(len(tris)).tobytes() + rec.tobytes())


def _write_ascii_ply(path, verts, faces=None):  # noqa: ANN001
    head = [
        "ply",
        "format ascii 1.0",
        f"element vertex {len(verts)}",
        *(f"property float {c}" for c in "xyz"),
    ]
    if faces is not None:
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    body = [" ".join(f"{x:.7f}" for x in v) for v in verts]
    body += [f"{len(f)} " + " ".join(map(str, f)) for f in (faces if faces is not None else [])]
    path.write_text("\n".join([*head, "end_header", *body]) + "\n")


def test_ply_and_stl_read_back_the_triangles_written_z_up_by_default(tmp_path):
    _write_binary_stl(tmp_path / "t.stl", TRIS)
    verts, faces = np.unique(TRIS.reshape(-1, 3), axis=0, return_inverse=True)
    _write_ascii_ply(tmp_path / "t.ply", verts, faces.reshape(-1, 3))
    for name in ("t.stl", "t.ply"):
        got = read_mesh_triangles(tmp_path / name)  # Blender's PLY / STL importers: Z-up, kept as is
        np.testing.assert_allclose(got, TRIS, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(read_mesh_triangles(tmp_path / name, up="y"), got @ Y_UP_TO_Z_UP.T)
        assert np.allclose(read_mesh_triangles(tmp_path / name, up="y")[0, 0], [0.1, -0.3, -0.2])


def test_bad_priors_exit_2_with_one_line_naming_the_problem_and_the_fix(tmp_path, capsys):
    png = str(_png(tmp_path / "a.png"))
    (tmp_path / "model.fbx").write_bytes(b"Kaydara FBX Binary  \x00\x1a\x00")
    (tmp_path / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00" + bytes(range(40)))
    _write_ascii_ply(tmp_path / "points.ply", TRIS.reshape(-1, 3))
    cases = {
        "missing.obj": ("Geometry prior not found", "check the --prior path"),
        "model.fbx": ("unsupported format '.fbx'", "use a mesh (.obj, .gltf, .glb, .ply, .stl)"),
        "broken.glb": ("Cannot read the mesh file broken.glb", "corrupt or incomplete: export it again"),
        "points.ply": ("points.ply has no faces (only points or lines", "export the object with its faces"),
    }
    for name, (problem, fix) in cases.items():
        out = tmp_path / f"{name}.near.npz"
        argv = ["import-image", png, "--prior", str(tmp_path / name), "--out", str(out), "--model", "unused"]
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("near import-image: error: "), err
        assert problem in err and fix in err, err
        assert not out.exists() and not list(tmp_path.glob(".tmp*"))
