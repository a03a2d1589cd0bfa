"""Object > NeAR > Bake PBR to Mesh in real Blender (issue 20): a sphere mesh and its NeAR asset; the
bake unwraps a copy of the mesh, writes three packed textures and a Principled BSDF material; the
glTF Blender's exporter writes re-imports with the three textures connected to the Principled
BSDF; bad input and a cancel change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from near_blender.render.color import linear_to_srgb
from tests.bpy_session import bpy, empty_scene, hdri_world, import_addon

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("tiny_model")]  # tiny_model: tests/conftest.py

addon = import_addon()
from near_addon.engine import scene_bridge  # noqa: E402
from near_addon.operators import bake_pbr  # noqa: E402
from near_addon.operators.demo.scene import near_asset  # noqa: E402

SIZE = 64


def _scene(tmp_path: Path):
    """A saved .blend: a UV sphere (no UVs kept), its NeAR asset (random LH-SLAT on its voxels), a
    camera and an HDRI world; both objects selected. Returns (sphere, asset)."""
    scene = empty_scene()
    hdri_world(scene, "forest")
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    cam = Camera(look_at((1.8, -1.4, 0.8), (0, 0, 0)), intrinsics_from_fov(40, 48, 48), 48, 48, 0.1, 100)
    scene_bridge.apply_camera(cam, cam_obj, scene)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "bake.blend"))
    bpy.ops.mesh.primitive_uv_sphere_add(segments=24, ring_count=12, radius=0.4, location=(0.1, 0.0, 0.05))
    sphere = bpy.context.active_object
    sphere.data.uv_layers.remove(sphere.data.uv_layers[0])
    mesh = sphere.data
    mesh.calc_loop_triangles()
    co = np.array([v.co[:] for v in mesh.vertices])
    tris = np.array([[co[i] for i in t.vertices] for t in mesh.loop_triangles]) + np.array([0.1, 0.0, 0.05])
    asset, _ = near_asset(bpy.context, tris, tmp_path / "sphere.near.npz", seed=5)
    for o in (sphere, asset):
        o.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    return sphere, asset


def _linked_image(bsdf, socket: str):
    """The Image Texture node that feeds ``socket`` of ``bsdf`` (directly or through Separate Color)."""
    link = bsdf.inputs[socket].links[0]
    node = link.from_node
    while node.type != "TEX_IMAGE":
        node = node.inputs[0].links[0].from_node
    return node.image


def test_bake_makes_a_textured_material_that_survives_gltf(tmp_path):
    sphere, asset = _scene(tmp_path)
    old_mesh = sphere.data.name
    assert bpy.ops.near.bake_pbr(size=SIZE) == {"FINISHED"}
    assert sphere.data.name != old_mesh and sphere.data.uv_layers.active.name == bake_pbr.UV_MAP
    mat = sphere.active_material
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    images = {s: _linked_image(bsdf, s) for s in ("Base Color", "Roughness", "Metallic")}
    assert all(img.size[:] == (SIZE, SIZE) and img.packed_file is not None for img in images.values())
    assert images["Base Color"].colorspace_settings.name == "sRGB"
    assert images["Roughness"].colorspace_settings.name == "Non-Color"

    # the textures hold the bake: the same values the bpy-free bake gives for these UVs
    from near_addon.operators.export_ply import asset_of, placed_asset, view_and_world

    from near_blender.export.bake import bake_pbr as bake

    pos, uv = bake_pbr.uv_triangles(bpy.context, sphere)
    a = asset_of(bpy.context, asset)
    camera, env, model, precision = view_and_world(bpy.context, a)
    with placed_asset(a, model, lambda f, m: None) as (renderer, placed):
        ref = bake(renderer, placed, uv, pos, SIZE, camera, env)
    assert ref.stats["texels_reached"] > 0.9 * ref.stats["texels"] and ref.covered.mean() > 0.3
    px = np.array(images["Base Color"].pixels[:]).reshape(SIZE, SIZE, 4)
    np.testing.assert_allclose(px[..., :3], linear_to_srgb(ref.base_color), atol=1 / 255 + 1e-6)
    rough = np.array(images["Roughness"].pixels[:]).reshape(SIZE, SIZE, 4)[..., 0]
    np.testing.assert_allclose(rough, ref.roughness, atol=1 / 255 + 1e-6)
    assert ref.base_color[ref.covered].std() > 0.01  # a texture, not a flat colour

    # glTF: exported by Blender, re-imported with the three textures on a Principled BSDF
    glb = tmp_path / "sphere.glb"
    bpy.ops.object.select_all(action="DESELECT")
    sphere.select_set(True)
    assert bpy.ops.export_scene.gltf(filepath=str(glb), export_format="GLB", use_selection=True) == {
        "FINISHED"
    }
    empty_scene()
    assert bpy.ops.import_scene.gltf(filepath=str(glb)) == {"FINISHED"}
    imported = next(o for o in bpy.context.scene.objects if o.type == "MESH")
    bsdf = next(n for n in imported.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    back = {s: _linked_image(bsdf, s) for s in ("Base Color", "Roughness", "Metallic")}
    assert all(img is not None and img.size[0] == SIZE for img in back.values())
    base_back = np.array(back["Base Color"].pixels[:]).reshape(SIZE, SIZE, 4)[..., :3]
    np.testing.assert_allclose(base_back, px[..., :3], atol=1 / 255 + 1e-6)
    # glTF packs roughness (G) and metallic (B) into one image; both channels came through
    orm = np.array(back["Roughness"].pixels[:]).reshape(SIZE, SIZE, 4)
    np.testing.assert_allclose(orm[..., 1], rough, atol=1 / 255 + 1e-6)


def test_bake_errors_and_cancel_change_nothing(tmp_path):
    sphere, asset = _scene(tmp_path)
    counts = lambda: (len(bpy.data.meshes), len(bpy.data.images), len(bpy.data.materials))  # noqa: E731
    before, mesh = counts(), sphere.data
    asset.select_set(False)
    with pytest.raises(RuntimeError, match="No NeAR asset is selected"):
        bpy.ops.near.bake_pbr(size=SIZE)
    asset.select_set(True)
    flat = bpy.data.objects.new("flat", bpy.data.meshes.new("flat"))
    flat.data.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
    bpy.context.scene.collection.objects.link(flat)
    sphere.select_set(False)
    flat.select_set(True)
    bpy.context.view_layer.objects.active = flat
    with pytest.raises(RuntimeError, match="'flat' has no faces"):
        bpy.ops.near.bake_pbr(size=SIZE)
    bpy.data.objects.remove(flat)
    bpy.data.meshes.remove(bpy.data.meshes["flat"])
    sphere.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    bake_pbr.NEAR_OT_bake_pbr._blocking_cancel = lambda: True  # Esc at the first step
    try:
        assert bpy.ops.near.bake_pbr(size=SIZE) == {"CANCELLED"}
    finally:
        bake_pbr.NEAR_OT_bake_pbr._blocking_cancel = None
    assert (
        counts() == before and sphere.data == mesh and not sphere.data.uv_layers and not sphere.data.materials
    )
