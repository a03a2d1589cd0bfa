"""World -> Environment bridge against real Blender worlds, including a Cycles render that shows
the equirect convention and the Mapping rotation are Blender's own."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

from near_blender import NearError
from near_blender.render import envmap as em
from near_blender.render import exr
from near_blender.render.camera import look_at
from tests.bpy_session import bpy, empty_scene, import_addon

pytestmark = pytest.mark.bpy

addon = import_addon()
bridge = addon.engine.scene_bridge
from near_addon.engine.session import RenderSession  # noqa: E402


def _smooth_hdr(H=32, W=64, seed=0):
    """A smooth HDR map with a bright, blurred patch near azimuth 40 deg, elevation 20 deg."""
    d = em.equirect_directions(H, W)
    rng = np.random.default_rng(seed)
    base = 0.2 + 0.1 * d[..., 2:3] + 0.05 * rng.random(3)
    sun = np.array([math.cos(math.radians(20)) * math.cos(math.radians(40)),
                    math.cos(math.radians(20)) * math.sin(math.radians(40)),
                    math.sin(math.radians(20))])  # fmt: skip
    blob = 30.0 * np.exp((d @ sun - 1.0) / 0.02)[..., None] * np.array([1.0, 0.8, 0.6])
    return (base + blob).astype(np.float32), sun


def _image_from_array(name, arr):
    H, W = arr.shape[:2]
    img = bpy.data.images.new(name, W, H, float_buffer=True, alpha=True)
    rgba = np.concatenate([arr, np.ones((H, W, 1), np.float32)], axis=2)[::-1]  # Blender: bottom row first
    img.pixels.foreach_set(np.ascontiguousarray(rgba).reshape(-1))
    return img


def _hdri_world(scene, image, strength=1.0, rotation=None, vector_type="POINT"):
    world = bpy.data.worlds.new("World")
    scene.world = world
    nt = world.node_tree
    bg = nt.nodes["Background"]
    bg.inputs["Strength"].default_value = strength
    tex = nt.nodes.new("ShaderNodeTexEnvironment")
    tex.image = image
    nt.links.new(tex.outputs["Color"], bg.inputs["Color"])
    if rotation is not None:
        coord = nt.nodes.new("ShaderNodeTexCoord")
        mapping = nt.nodes.new("ShaderNodeMapping")
        mapping.vector_type = vector_type
        mapping.inputs["Rotation"].default_value = rotation
        nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
        nt.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    return world


def test_in_memory_image_round_trips_exactly_with_strength():
    scene = empty_scene()
    arr, _ = _smooth_hdr()
    world = _hdri_world(scene, _image_from_array("gen", arr), strength=2.5)
    env = bridge.environment_from_world(world)
    np.testing.assert_allclose(env.radiance, arr * 2.5, rtol=1e-6)
    assert env.rotation_z == 0.0
    assert env.meta["image"] == "gen"


@pytest.mark.parametrize(("vector_type", "sign"), [("POINT", 1), ("VECTOR", 1), ("TEXTURE", -1)])
def test_mapping_rotation_is_read(vector_type, sign):
    scene = empty_scene()
    arr, _ = _smooth_hdr()
    world = _hdri_world(scene, _image_from_array("gen", arr), rotation=(0, 0, math.radians(30)),
                        vector_type=vector_type)  # fmt: skip
    env = bridge.environment_from_world(world)
    assert env.rotation_z == pytest.approx(sign * math.radians(30), abs=1e-6)


def test_plain_colour_world_is_uniform():
    scene = empty_scene()
    world = bpy.data.worlds.new("Plain")
    scene.world = world
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (0.2, 0.4, 0.8, 1.0)
    bg.inputs["Strength"].default_value = 2.0
    env = bridge.environment_from_world(world)
    np.testing.assert_allclose(env.radiance.reshape(-1, 3), np.tile([0.4, 0.8, 1.6], (env.radiance.size // 3, 1)),
                               rtol=1e-6)  # fmt: skip


def test_packed_relative_and_byte_images(tmp_path):
    empty_scene()
    arr, _ = _smooth_hdr(16, 32)
    exr.write_exr(tmp_path / "sky.exr", arr, half=False)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    img = bpy.data.images.load("//sky.exr")  # relative to the .blend
    assert img.filepath.startswith("//")
    world = _hdri_world(bpy.context.scene, img)
    np.testing.assert_allclose(bridge.environment_from_world(world).radiance, arr, rtol=1e-6)
    img.pack()
    (tmp_path / "sky.exr").unlink()  # only the packed copy is left
    img.reload()
    np.testing.assert_allclose(bridge.environment_from_world(world).radiance, arr, rtol=1e-6)
    # An 8-bit sRGB image is linearized.
    b = bpy.data.images.new("byte", 8, 4)
    b.pixels.foreach_set(np.full(8 * 4 * 4, 0.5, np.float32))
    world.node_tree.nodes["Environment Texture"].image = b
    lin = bridge.environment_from_world(world).radiance
    assert lin[0, 0, 0] == pytest.approx(((128 / 255 + 0.055) / 1.055) ** 2.4, rel=1e-3)


def test_bad_worlds_name_the_problem(tmp_path):
    scene = empty_scene()
    with pytest.raises(NearError, match="no World"):
        bridge.environment_from_world(scene.world)
    with pytest.raises(NearError, match="no shader node tree"):
        bridge.environment_from_world(types.SimpleNamespace(name="Bare", node_tree=None))
    world = bpy.data.worlds.new("Sky")
    nt = world.node_tree
    sky = nt.nodes.new("ShaderNodeTexSky")
    nt.links.new(sky.outputs["Color"], nt.nodes["Background"].inputs["Color"])
    with pytest.raises(NearError, match=r"'Sky Texture' \(ShaderNodeTexSky\)"):
        bridge.environment_from_world(world)
    arr, _ = _smooth_hdr()
    w2 = _hdri_world(scene, _image_from_array("g", arr), rotation=(0.3, 0, 0))
    with pytest.raises(NearError, match="only rotate about Z"):
        bridge.environment_from_world(w2)
    exr.write_exr(tmp_path / "gone.exr", arr)
    gone = bpy.data.images.load(str(tmp_path / "gone.exr"))
    (tmp_path / "gone.exr").unlink()  # the file disappears after the .blend referenced it
    gone.reload()
    w3 = _hdri_world(scene, gone)
    with pytest.raises(NearError, match="could not be loaded"):
        bridge.environment_from_world(w3)
    w4 = _hdri_world(scene, _image_from_array("g2", arr))
    w4.node_tree.nodes["Environment Texture"].projection = "MIRROR_BALL"
    with pytest.raises(NearError, match="Equirectangular"):
        bridge.environment_from_world(w4)


@pytest.mark.parametrize("rotation_deg", [0.0, 75.0])
def test_cycles_render_of_the_world_matches_our_lookup(tmp_path, rotation_deg):
    """Cycles renders the world through a camera aimed near the bright patch; the patch lands where
    our direction<->pixel mapping (plus the Mapping rotation) says, and the whole frame agrees."""
    scene = empty_scene()
    arr, sun_tex = _smooth_hdr(64, 128, seed=1)
    rot = math.radians(rotation_deg)
    _hdri_world(scene, _image_from_array("patch", arr), rotation=(0, 0, rot))
    sun_world = em.rotation_z(-rot) @ sun_tex  # world direction showing the texel `sun_tex`
    aim = em.rotation_z(math.radians(12)) @ sun_world  # off-centre, so the patch is not at the centre
    cam_data = bpy.data.cameras.new("cam")
    cam_obj = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    from near_blender.render.camera import Camera, intrinsics_from_fov

    want = Camera(look_at((0, 0, 0), aim), intrinsics_from_fov(60, 48, 32), 48, 32, 0.1, 100)
    bridge.apply_camera(want, cam_obj, scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4
    scene.cycles.filter_width = 0.01  # pixel-centre rays, no reconstruction blur
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(tmp_path / "world.exr")
    bpy.ops.render.render(write_still=True)
    cycles_img = exr.read_exr(tmp_path / "world.exr")[..., :3]

    cam = bridge.scene_camera(scene)
    env = bridge.environment_from_world(scene.world)
    ours = RenderSession.render_images(cam, env)["rgba"][..., :3]
    # The bright patch is where our projection of its world direction says.
    lum = cycles_img.sum(-1)
    mask = lum > 0.5 * lum.max()
    ys, xs = np.nonzero(mask)
    w = lum[mask]
    centroid = np.array([(xs + 0.5) @ w, (ys + 0.5) @ w]) / w.sum()
    predicted = cam.project(sun_world[None] * 50.0)[0][0]
    assert np.linalg.norm(centroid - predicted) < 0.75, (centroid, predicted)
    # And the whole frame agrees pixel by pixel (bilinear lookups on both sides).
    rel = np.abs(ours - cycles_img) / (cycles_img + 0.05)
    assert np.median(rel) < 0.01 and rel.max() < 0.1, (np.median(rel), rel.max())
