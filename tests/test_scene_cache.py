"""SceneRenderer caches across frames: an unchanged asset / world is not re-encoded, a change is."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender.pipeline import NearPipeline
from near_blender.render.camera import Camera, intrinsics_from_fov, look_at
from near_blender.render.envmap import Environment, rotation_z
from near_blender.scene import PlacedAsset, SceneRenderer, lighting_key
from tests.tiny_pipeline import build_tiny_pipeline


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    return SceneRenderer(NearPipeline.from_pretrained(build_tiny_pipeline(tmp_path_factory.mktemp("m"))))


def _camera(eye, target=(0.0, 0.0, 0.0)) -> Camera:
    return Camera(look_at(np.asarray(eye, float), np.asarray(target, float)), intrinsics_from_fov(40, 24, 24),
                  24, 24, 0.1, 100)  # fmt: skip


def _env(seed: int = 0, rotation: float = 0.0) -> Environment:
    rad = np.random.default_rng(seed).uniform(0.1, 2.0, (16, 32, 3)).astype(np.float32)
    return Environment(rad, rotation, "noise")


def test_lighting_key_follows_what_the_tokenizer_sees():
    cam = _camera((2.0, -1.0, 0.5))
    moved = _camera((2.0, -0.5, 0.5), (0.0, 0.5, 0.0))  # translated, same orientation
    env = _env()
    assert lighting_key(env, cam.viewmat) == lighting_key(env, moved.viewmat)
    assert lighting_key(env, cam.viewmat) != lighting_key(env.with_rotation(0.3), cam.viewmat)
    assert lighting_key(env, cam.viewmat) != lighting_key(_env(seed=1), cam.viewmat)
    # turning the camera about Z by t and the world by -t leaves every texel where the camera sees it
    t = 0.4
    turned = np.asarray(cam.viewmat, float).copy()
    turned[:3, :3] = turned[:3, :3] @ rotation_z(t).T
    assert lighting_key(env, cam.viewmat) == lighting_key(env.with_rotation(-t), turned)


def test_frames_reuse_the_encoders(renderer):
    g = np.stack(np.meshgrid(*[np.arange(28, 36)] * 3, indexing="ij"), -1).reshape(-1, 3)
    feats = np.random.default_rng(0).normal(size=(len(g), 16)).astype(np.float32)
    M = np.eye(4)
    asset = PlacedAsset(("ball", 1), g, feats, M)
    env = _env()
    cams = [_camera((2.0, y, 0.5), (0.0, y, 0.0)) for y in (0.0, 0.1, 0.2)]  # a dolly: no turning
    imgs = [renderer.render([asset], c, env) for c in cams]
    assert renderer.stats == {"asset_hits": 2, "asset_misses": 1, "lighting_hits": 2, "lighting_misses": 1,
                              "conditioning_builds": 1}  # fmt: skip
    assert np.abs(imgs[0]["alpha"] - imgs[2]["alpha"]).max() > 0.05  # the frames do differ
    # the object moves: still no encoder run
    moved = PlacedAsset(
        ("ball", 1), g, feats, np.array([[1, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    )
    renderer.render([moved], cams[0], env)
    assert renderer.stats["asset_misses"] == 1 and renderer.stats["lighting_misses"] == 1
    # an animated world rotation: the tokenizer runs again, the pixel maps are reused, and the image is
    # the one an uncached renderer gives
    rotated = renderer.render([asset], cams[0], env.with_rotation(math.radians(90)))
    assert renderer.stats["lighting_misses"] == 2 and renderer.stats["conditioning_builds"] == 1
    fresh = SceneRenderer(renderer.pipe).render([asset], cams[0], env.with_rotation(math.radians(90)))
    np.testing.assert_allclose(rotated["hdr"], fresh["hdr"], atol=1e-6)
    assert np.abs(rotated["hdr"] - imgs[0]["hdr"]).max() > 1e-4
    # the same pixels in a new array (the world re-read next frame) hit the cache
    renderer.render([asset], cams[1], Environment(env.radiance.copy(), 0.0, "again"))
    assert renderer.stats["lighting_misses"] == 2 and renderer.stats["conditioning_builds"] == 1
