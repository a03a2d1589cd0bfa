"""Lighting conditioning: area-preserving resampling, the three maps, rotation, bad maps."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from near_blender import NearError
from near_blender.render.camera import look_at
from near_blender.render.conditioning import (
    FIXED_LOG_NORM,
    EnvConditioning,
    downsample_equirect,
    environment_conditioning,
)
from near_blender.render.envmap import (
    Environment,
    equirect_directions,
    pixel_solid_angles,
    rotation_z,
    sanitize_radiance,
)


def total_radiance(image: np.ndarray) -> np.ndarray:
    """``sum(E * solid_angle)`` per channel [3] of an equirect map (W sr-weighted)."""
    H, W = image.shape[:2]
    return (np.asarray(image, np.float64) * pixel_solid_angles(H, W)[..., None]).sum(axis=(0, 1))


def _map_with_sun(rng: np.random.Generator, h: int = 128, sun: float = 35700.0) -> tuple[np.ndarray, tuple]:
    img = rng.uniform(0.05, 1.0, (h, 2 * h, 3)).astype(np.float32)
    j, i = h // 3, 2 * h // 5 + 1
    img[j, i] = sun  # a one-texel sun
    return img, (j, i)


@pytest.mark.parametrize("size", [(32, 64), (7, 14), (48, 96), (20, 64), (256, 512)])
def test_downsampling_preserves_total_radiance(size: tuple, rng: np.random.Generator) -> None:
    img, _ = _map_with_sun(rng)
    out = downsample_equirect(img, *size)
    assert out.shape == (*size, 3) and out.dtype == np.float32
    before, after = total_radiance(img), total_radiance(out)
    assert np.all(np.abs(after / before - 1) < 1e-5)  # acceptance: within 1 %


def test_sun_energy_stays_where_the_sun_is(rng: np.random.Generator) -> None:
    img, (j, i) = _map_with_sun(rng, sun=1e4)
    base = img.copy()
    base[j, i] = img[(j + 1), i]
    out, out_base = downsample_equirect(img, 16), downsample_equirect(base, 16)
    diff = total_radiance(out) - total_radiance(out_base)
    # the sun's whole energy shows up, in the one output pixel containing its texel
    jj, ii = np.unravel_index(np.abs(out - out_base).sum(-1).argmax(), out.shape[:2])
    assert (jj, ii) == (j * 16 // 128, i * 32 // 256)
    sun_energy = (
        (1e4 - img[j + 1, i])
        * (math.cos(math.pi * j / 128) - math.cos(math.pi * (j + 1) / 128))
        * (2 * math.pi / 256)
    )
    assert np.allclose(diff, sun_energy, rtol=1e-4)


def test_constant_map_stays_constant() -> None:
    img = np.full((40, 80, 3), 0.7, np.float32)
    for size in [(10, 20), (13, 26), (64, 128)]:
        assert np.allclose(downsample_equirect(img, *size), 0.7, atol=1e-6)


def test_real_studio_map_keeps_its_energy() -> None:
    import near_blender.render.exr as exr

    spec = importlib.util.find_spec("bpy")  # located, not imported
    root = Path(spec.origin).parent if spec is not None and spec.origin else None
    path = root / "5.0/datafiles/studiolights/world/interior.exr" if root else None
    if path is None or not path.is_file():
        pytest.skip("Blender's studio lights are not installed")
    img = exr.read_exr(path)[..., :3]
    # Blender's own file has one slightly negative texel (-2e-6, lossy DWAB): clamped, not refused.
    assert (img < 0).sum() == 1
    img, repairs = sanitize_radiance(img)
    assert repairs["negative"] == 1
    out = downsample_equirect(img, 32)
    np.testing.assert_array_equal(out, downsample_equirect(exr.read_exr(path)[..., :3], 32))
    assert img.max() > 1e4  # a real sun-like peak
    assert np.all(np.abs(total_radiance(out) / total_radiance(img) - 1) < 1e-3)


def test_maps_channels_and_ranges(rng: np.random.Generator) -> None:
    img, _ = _map_with_sun(rng, h=64)
    img[0, 0] = 0.0
    maps = environment_conditioning(img, np.eye(4), height=64)
    for m in (maps.ldr, maps.log, maps.dirs):
        assert m.shape == (64, 128, 3) and m.dtype == torch.float32
    assert maps.ldr.min() >= -1 and maps.ldr.max() <= 1 and maps.ldr[0, 0].eq(-1).all()
    E = torch.from_numpy(img.astype(np.float64))
    srgb = lambda x: torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)  # noqa: E731
    assert torch.allclose(maps.ldr.double(), srgb(E / (1 + E)) * 2 - 1, atol=1e-6)
    assert torch.allclose(maps.log.double(), torch.log1p(E) / FIXED_LOG_NORM, atol=1e-6)
    assert maps.log.max() < 1 and torch.allclose(maps.dirs.norm(dim=-1), torch.tensor(1.0), atol=1e-6)
    assert maps.stacked().shape == (9, 64, 128)
    # log normalizations
    assert EnvConditioning(img, 64, log_norm="max").log.max() == pytest.approx(1.0)
    assert torch.allclose(
        EnvConditioning(img, 64, log_norm=2.0).log.double(), torch.log1p(E) / 2.0, atol=1e-6
    )
    with pytest.raises(NearError, match="log_norm"):
        EnvConditioning(img, 64, log_norm="median")


def test_brighter_map_gives_a_brighter_log_channel(rng: np.random.Generator) -> None:
    img, _ = _map_with_sun(rng, h=32)
    a = EnvConditioning(img, 32).log
    b = EnvConditioning(img * 4, 32).log
    assert (b > a).all()  # fixed normalization keeps absolute intensity


def test_rotation_changes_only_directions(rng: np.random.Generator) -> None:
    img, _ = _map_with_sun(rng, h=32)
    vm = look_at([3.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    a = 0.7
    m0 = EnvConditioning(Environment(img, 0.0), 32)(vm)
    ma = EnvConditioning(Environment(img, a), 32)(vm)
    assert torch.equal(m0.ldr, ma.ldr) and torch.equal(m0.log, ma.log)
    R = vm[:3, :3]
    expected = m0.dirs.double().numpy() @ (R @ rotation_z(-a) @ R.T).T
    assert np.abs(ma.dirs.double().numpy() - expected).max() < 1e-6
    assert np.abs(ma.dirs.double().numpy() - m0.dirs.double().numpy()).max() > 0.5
    # another camera: again only the directions change
    mc = EnvConditioning(Environment(img, a), 32)(look_at([-1.0, 2.0, 0.5], [0.0, 0.0, 0.0]))
    assert torch.equal(mc.ldr, ma.ldr) and not torch.allclose(mc.dirs, ma.dirs)


def test_sun_direction_follows_blender_mapping(rng: np.random.Generator) -> None:
    """The direction channel at the sun's texel is where Environment.radiance_at sees the sun."""
    h = 32
    img, (j, i) = _map_with_sun(rng, h=h, sun=100.0)
    a = -1.1
    env = Environment(img, a)
    vm = look_at([2.0, -3.0, 1.0], [0.0, 0.0, 0.0])
    cond = EnvConditioning(env, h)  # same resolution: texel (j, i) is kept
    d_cam = cond.directions(vm)[j, i].double().numpy()
    d_world = vm[:3, :3].T @ d_cam
    assert env.radiance_at(d_world[None])[0] == pytest.approx(img[j, i], rel=1e-4)
    # and a camera looking along the world direction of the sun sees it straight ahead (+z)
    vm2 = look_at([0.0, 0.0, 0.0], d_world)
    assert np.allclose(cond.directions(vm2)[j, i].double().numpy(), [0.0, 0.0, 1.0], atol=1e-6)
    # with no rotation and the identity camera, directions are the texel directions themselves
    dirs = EnvConditioning(img, h, dtype=torch.float64).directions(np.eye(4)).numpy()
    assert np.allclose(dirs, equirect_directions(h, 2 * h), atol=1e-12)


def test_bad_maps_raise_or_are_sanitized(rng: np.random.Generator) -> None:
    img, _ = _map_with_sun(rng, h=16)
    for bad_value, word in [(np.nan, "1 NaN"), (np.inf, "1 Inf"), (-2.0, "1 negative")]:
        bad = img.copy()
        bad[3, 4, 1] = bad_value
        with pytest.raises(NearError, match=word):
            downsample_equirect(bad, 8)
        with pytest.raises(NearError, match=word):
            EnvConditioning(bad, 8)
        fixed = EnvConditioning(bad, 8, sanitize=True)
        assert sum(fixed.repairs.values()) == 1
        assert torch.isfinite(fixed.log).all() and torch.isfinite(fixed.ldr).all()
    with pytest.raises(NearError, match="twice as wide"):
        downsample_equirect(np.ones((16, 16, 3), np.float32), 8)
    with pytest.raises(NearError, match="not orthonormal"):
        EnvConditioning(img, 8)(np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(NearError, match="4x4"):
        EnvConditioning(img, 8)(np.eye(5))
