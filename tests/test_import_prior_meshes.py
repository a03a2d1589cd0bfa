"""Geometry priors made of several objects or read from mesh files, in real Blender (bpy module).

File > Import > Image as NeAR Asset voxelizes all the selected meshes together, and
``near import-image --prior FILE`` reads .glb / .obj files in the frame Blender's own importers give
them (checked against ``bpy.ops.import_scene.gltf`` / ``bpy.ops.wm.obj_import``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from near_blender import NearError
from near_blender.commands.import_image import prior_voxels
from near_blender.data.mesh_io import Y_UP_TO_Z_UP, read_mesh_triangles
from near_blender.data.slat_io import load_slat_npz
from near_blender.data.voxelize import canonical_transform, voxelize_triangles
from tests.bpy_session import bpy, empty_scene, import_addon

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

addon = import_addon()
from near_addon.operators import import_image  # noqa: E402


def _mesh_triangles(obj) -> np.ndarray:  # noqa: ANN001
    """World triangles ``[F, 3, 3]`` of a mesh object without modifiers, from its vertex array."""
    me = obj.data
    me.calc_loop_triangles()
    co = np.array([v.co[:] for v in me.vertices], np.float64)
    M = np.array(obj.matrix_world, np.float64)
    world = co @ M[:3, :3].T + M[:3, 3]
    return world[np.array([t.vertices[:] for t in me.loop_triangles])]


def _voxels(tris: np.ndarray, M: np.ndarray | None = None) -> np.ndarray:
    """Voxels of ``tris`` in the canonical box of ``M`` (default: their own)."""
    M = canonical_transform(tris) if M is None else M
    return voxelize_triangles(tris @ M[:3, :3].T + M[:3, 3])


def _rows(a: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, np.asarray(a).tolist()))


def _cube_and_sphere() -> tuple:
    """A rotated, squashed cube and a sphere apart from it (the sphere parented to the cube)."""
    scene = empty_scene()
    bpy.ops.mesh.primitive_cube_add(size=0.6, location=(-0.7, 0.15, 0.1), rotation=(0.3, 0.2, 0.5))
    cube = bpy.context.active_object
    cube.scale = (1.0, 0.5, 1.5)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(0.6, -0.2, 0.35), segments=16, ring_count=8)
    sphere = bpy.context.active_object
    bpy.context.view_layer.update()
    return scene, cube, sphere


def _png(path: Path) -> Path:
    from PIL import Image

    yy, xx = np.mgrid[0:48, 0:64]
    mask = ((xx - 32) ** 2 + (yy - 24) ** 2) < 18**2
    rgba = np.dstack([mask * 200, mask * 120, mask * 60, mask * 255]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_selected_meshes_form_one_prior_and_are_all_hidden(tmp_path, tiny_model):
    scene, cube, sphere = _cube_and_sphere()
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    light = bpy.data.objects.new("light", bpy.data.lights.new("light", "POINT"))
    for o in (cam, light):
        scene.collection.objects.link(o)
    cam.location, cam.rotation_euler = (0.0, -4.0, 0.5), (1.45, 0.0, 0.0)
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    for o in (cube, sphere, cam, light):  # the camera and the light are ignored
        o.select_set(True)
    bpy.context.view_layer.objects.active = sphere

    assert bpy.ops.near.import_image(filepath=str(_png(tmp_path / "photo.png")), steps=1) == {"FINISHED"}
    asset = bpy.context.active_object
    coords, _ = load_slat_npz(bpy.path.abspath(asset.near_asset.sidecar))

    both = np.concatenate([_mesh_triangles(cube), _mesh_triangles(sphere)])
    M = canonical_transform(both)
    assert np.array_equal(coords, _voxels(both))
    np.testing.assert_allclose(np.array(asset.matrix_world), np.linalg.inv(M), atol=1e-6)
    # each mesh is in it, and neither alone is all of it
    for part in (cube, sphere):
        alone = _rows(_voxels(_mesh_triangles(part), M))
        assert alone < _rows(coords) and len(alone) < len(coords) - 100, part.name
    assert cube.hide_render and sphere.hide_render and not light.hide_render
    assert asset.parent is None and asset.select_get() and not cube.select_get()


def test_prior_triangles_are_evaluated_and_errors_say_what_to_select():
    scene, cube, sphere = _cube_and_sphere()
    cube.rotation_euler = (0.0, 0.0, 0.0)
    mod = cube.modifiers.new("array", "ARRAY")  # two cubes side by side along x: 1.2 wide
    mod.count = 2
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    tris = import_image.prior_triangles([cube], depsgraph)
    lo, hi = tris.reshape(-1, 3).min(0), tris.reshape(-1, 3).max(0)
    np.testing.assert_allclose(hi - lo, [1.2, 0.3, 0.9], atol=1e-6)

    bpy.ops.object.select_all(action="DESELECT")  # nothing selected: the active object
    bpy.context.view_layer.objects.active = sphere
    assert import_image.prior_objects(bpy.context) == [sphere]
    curve = bpy.data.objects.new("path", bpy.data.curves.new("path", "CURVE"))  # no bevel: no faces
    curve.data.splines.new("POLY").points.add(2)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    for o in (curve, cam):
        scene.collection.objects.link(o)
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    with pytest.raises(
        NearError, match=r"^None of the selected objects \('path' \(curve\)\) has faces\. Select"
    ):
        import_image.prior_triangles([curve], depsgraph)
    with pytest.raises(NearError, match=r"^The selection \('cam' \(camera\)\) has no mesh\. .*File > Import"):
        import_image.prior_triangles([cam], depsgraph)
    with pytest.raises(NearError, match=r"^Nothing is selected\. Select the mesh\(es\)"):
        import_image.prior_triangles([], depsgraph)
    assert len(import_image.prior_triangles([curve, cam, sphere], depsgraph)) == 16 * 8 * 2 - 2 * 16


def _import_file(path: Path) -> list:
    """The mesh objects that Blender's own importer makes of ``path``."""
    before = set(bpy.data.objects)
    if path.suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(path))
    else:
        bpy.ops.wm.obj_import(filepath=str(path))
    return [o for o in bpy.data.objects if o not in before and o.type == "MESH"]


def _assert_same_geometry(ours: np.ndarray, blenders: np.ndarray) -> None:
    """Same triangle count and, vertex by vertex, the same positions (1e-6)."""
    assert ours.shape == blenders.shape
    a, b = ours.reshape(-1, 3), blenders.reshape(-1, 3)
    nearest = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1)
    assert nearest.max() < 1e-6, nearest.max()


def test_gltf_prior_on_the_cli_gives_the_voxels_of_blenders_import(tmp_path):
    scene, cube, sphere = _cube_and_sphere()
    # a node hierarchy: the cube's transform is relative to the (unscaled) sphere's; a non-uniformly
    # scaled parent would shear its child, which glTF's node transforms cannot hold
    cube.parent = sphere
    cube.matrix_parent_inverse = sphere.matrix_world.inverted()
    bpy.context.view_layer.update()
    original = np.concatenate([_mesh_triangles(cube), _mesh_triangles(sphere)])
    path = tmp_path / "prior.glb"
    bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB")
    bpy.ops.object.select_all(action="DESELECT")
    imported = _import_file(path)
    assert len(imported) == 2
    blenders = np.concatenate([_mesh_triangles(o) for o in imported])
    ours = read_mesh_triangles(path)
    _assert_same_geometry(ours, blenders)
    _assert_same_geometry(ours, original)
    coords, M = prior_voxels(path)
    assert np.array_equal(coords, _voxels(blenders)) and len(coords) > 1000
    np.testing.assert_allclose(M, np.linalg.inv(canonical_transform(blenders)), atol=1e-6)


def test_obj_from_blenders_exporter_is_y_up_by_default_and_up_z_rotates_it(tmp_path):
    from bpy_extras.io_utils import axis_conversion

    # Blender's own Y-up -> Z-up conversion (OBJ importer defaults: forward -Z, up Y) is ours
    np.testing.assert_array_equal(np.array(axis_conversion(from_forward="-Z", from_up="Y")), Y_UP_TO_Z_UP)
    scene, cube, sphere = _cube_and_sphere()
    path = tmp_path / "prior.obj"
    bpy.ops.wm.obj_export(filepath=str(path))  # the exporter's defaults: forward -Z, up Y
    bpy.ops.object.select_all(action="DESELECT")
    blenders = np.concatenate([_mesh_triangles(o) for o in _import_file(path)])
    _assert_same_geometry(read_mesh_triangles(path), blenders)
    coords, _ = prior_voxels(path)
    assert np.array_equal(coords, _voxels(blenders))
    # read Z-up instead: the file's raw frame, i.e. Blender's world turned back by (x, y, z) -> (x, z, -y)
    coords_z, M_z = prior_voxels(path, "z")
    raw = blenders @ Y_UP_TO_Z_UP  # the inverse (transpose) rotation
    assert np.array_equal(coords_z, _voxels(raw)) and not np.array_equal(coords_z, coords)
    np.testing.assert_allclose(M_z, np.linalg.inv(canonical_transform(raw)), atol=1e-6)
