"""``near import-image``: stage 1 without Blender, from an image file and an OBJ / voxel prior."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from near_blender import NearError, cli
from near_blender.commands.import_image import prior_voxels, read_obj_triangles, read_rgba, srgb_to_linear
from near_blender.data.slat_io import load_slat_npz
from near_blender.data.voxelize import voxelize_triangles
from near_blender.models.tiny_pipeline import build_tiny_pipeline

# a 2 x 1 x 1 box centred at (3, 0, 1), as quads
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
    tris = read_obj_triangles(tmp_path / "box.obj")
    assert tris.shape == (12, 3, 3)
    coords, M = prior_voxels(tmp_path / "box.obj")
    # canonical box: centred, largest side (x: 2 units) -> 1; so x spans the grid, y/z half of it
    assert coords[:, 0].min() == 0 and coords[:, 0].max() == 63
    assert 15 <= coords[:, 1].min() <= 17 and 46 <= coords[:, 1].max() <= 48
    np.testing.assert_allclose(M @ [0.5, 0.5, 0.5, 1], [4, 1, 2, 1], atol=1e-9)  # uniform scale 2
    np.testing.assert_allclose(M @ [0, 0, 0, 1], [3, 0, 1, 1], atol=1e-9)
    canon = (tris - [3, 0, 1]) / 2.0
    assert np.array_equal(coords, voxelize_triangles(canon))
    (tmp_path / "nofaces.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(NearError, match="no faces"):
        prior_voxels(tmp_path / "nofaces.obj")
    with pytest.raises(NearError, match="use an .obj mesh or an .npz"):
        (tmp_path / "x.stl").write_text("solid")
        prior_voxels(tmp_path / "x.stl")


def test_cli_writes_the_lh_slat_sidecar(tmp_path, capsys):
    model = build_tiny_pipeline(tmp_path / "model")
    (tmp_path / "box.obj").write_text(BOX_OBJ)
    out = tmp_path / "asset.near.npz"
    argv = ["import-image", str(_png(tmp_path / "a.png")), "--prior", str(tmp_path / "box.obj")]
    assert cli.main([*argv, "--out", str(out), "--model", str(model), "--steps", "2"]) == 0
    coords, feats = load_slat_npz(out)
    assert np.array_equal(coords, prior_voxels(tmp_path / "box.obj")[0])
    assert feats.shape == (len(coords), 16) and np.isfinite(feats).all()
    with np.load(out) as d:
        np.testing.assert_allclose(d["matrix_world"] @ [0, 0, 0, 1], [3, 0, 1, 1], atol=1e-9)
    assert cli.main([*argv, "--out", str(tmp_path / "x.npz"), "--model", str(tmp_path / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
