"""Environment resampling and irradiance, one module for the tokenizer input, the diffuse prior,
the dataset's shadow target and the evaluation baseline (:mod:`near_blender.render.irradiance`).

Analytic references (constant map, one bright texel), and pins of every caller against the
formulas they used before the consolidation, written out here as plain loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender.data.shadow import irradiance_map
from near_blender.eval.irradiance import Irradiance
from near_blender.render.conditioning import downsample_equirect
from near_blender.render.envmap import Environment, equirect_directions


def _env(h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.gamma(0.5, 1.0, (h, 2 * h, 3))
    img[h // 5, h // 3] = 500.0  # a sun
    return img


def _row_omega(n: int, w: int) -> np.ndarray:
    t = np.linspace(0.0, math.pi, n + 1)
    return np.array([(math.cos(t[j]) - math.cos(t[j + 1])) * 2 * math.pi / w for j in range(n)])


def _ref_area(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """The tokenizer's resampling as it was: overlap of cells in (-cos theta) x u."""
    H, W = img.shape[:2]
    ms, md = -np.cos(np.linspace(0, math.pi, H + 1)), -np.cos(np.linspace(0, math.pi, h + 1))
    xs, xd = np.linspace(0, 1, W + 1), np.linspace(0, 1, w + 1)
    out = np.zeros((h, w, 3))
    for r in range(h):
        for R in range(H):
            fy = max(0.0, min(md[r + 1], ms[R + 1]) - max(md[r], ms[R])) / (md[r + 1] - md[r])
            for c in range(w if fy else 0):
                for C in range(W):
                    fx = max(0.0, min(xd[c + 1], xs[C + 1]) - max(xd[c], xs[C])) / (xd[c + 1] - xd[c])
                    out[r, c] += fy * fx * img[R, C]
    return out


def _ref_cells(img: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Solid-angle weighted mean radiance and solid angle of cells: source pixel (j, i) goes whole
    to cell (j * h // H, i * w // W)."""
    H, W = img.shape[:2]
    om = _row_omega(H, W)
    num, den = np.zeros((h, w, 3)), np.zeros((h, w))
    for j in range(H):
        for i in range(W):
            num[j * h // H, i * w // W] += img[j, i] * om[j]
            den[j * h // H, i * w // W] += om[j]
    return num / den[..., None], den


def _ref_E(normals: np.ndarray, dirs: np.ndarray, power: np.ndarray) -> np.ndarray:
    return np.einsum("mk,kc->mc", np.maximum(np.einsum("mi,ki->mk", normals, dirs), 0.0), power)


@pytest.mark.parametrize(("src", "size"), [(16, (8, 16)), (12, (5, 7)), (6, (9, 20))])
def test_tokenizer_resampling_is_unchanged(src: int, size: tuple) -> None:
    img = _env(src, src)
    got = downsample_equirect(img.astype(np.float32), *size)
    want = _ref_area(img.astype(np.float32).astype(np.float64), *size)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * want.max())


@pytest.mark.parametrize("src", [48, 128, 96])  # no reduction, whole blocks, uneven cells (floor)
def test_shadow_target_irradiance_is_unchanged(src: int) -> None:
    img, h = _env(src, 1), 8
    cells = min(src, 64)
    rad, _ = _ref_cells(img, cells, 2 * cells)
    power = (rad * _row_omega(cells, 2 * cells)[:, None, None]).reshape(-1, 3)  # nominal texel sr
    want = _ref_E(
        equirect_directions(h, 2 * h).reshape(-1, 3),
        equirect_directions(cells, 2 * cells).reshape(-1, 3),
        power,
    )
    got = irradiance_map(img, h)
    np.testing.assert_allclose(got.reshape(-1, 3), want, rtol=1e-9)


@pytest.mark.parametrize(("src", "height", "cells"), [(40, 32, 20), (64, 16, 16), (8, 32, 8)])
def test_baseline_irradiance_is_unchanged(src: int, height: int, cells: int) -> None:
    img, rot = _env(src, 2).astype(np.float32).astype(np.float64), 0.8
    rad, om = _ref_cells(img, cells, 2 * cells)  # the largest divisor of H not above `height`
    c, s = math.cos(rot), math.sin(rot)
    dirs = equirect_directions(cells, 2 * cells).reshape(-1, 3) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    n = np.random.default_rng(3).normal(size=(200, 3))
    want = _ref_E(n / np.linalg.norm(n, axis=1, keepdims=True), dirs, (rad * om[..., None]).reshape(-1, 3))
    np.testing.assert_allclose(
        Irradiance(Environment(img.astype(np.float32), rot), height)(n), want, rtol=1e-9
    )


def test_constant_map_gives_pi_L_everywhere() -> None:
    L = np.array([0.5, 1.0, 2.0])
    img = np.broadcast_to(L, (64, 128, 3)).astype(np.float32)
    n = np.random.default_rng(0).normal(size=(100, 3))
    np.testing.assert_allclose(
        Irradiance(Environment(img))(n), np.broadcast_to(math.pi * L, (100, 3)), rtol=2e-3
    )
    np.testing.assert_allclose(irradiance_map(img), np.broadcast_to(math.pi * L, (32, 64, 3)), rtol=2e-3)
    np.testing.assert_allclose(downsample_equirect(img, 8), np.broadcast_to(L, (8, 16, 3)), rtol=1e-6)


def test_single_bright_texel_is_a_point_light() -> None:
    img = np.zeros((64, 128, 3), np.float32)
    img[20, 77] = [100.0, 50.0, 25.0]
    d = equirect_directions(64, 128)[20, 77]
    power = img[20, 77] * _row_omega(64, 128)[20]
    n = np.random.default_rng(1).normal(size=(300, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    want = np.maximum(n @ d, 0.0)[:, None] * power
    np.testing.assert_allclose(Irradiance(Environment(img), 64)(n), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        irradiance_map(img, 4).reshape(-1, 3),
        _ref_E(equirect_directions(4, 8).reshape(-1, 3), d[None], power[None]),
        rtol=1e-6,
        atol=1e-9,
    )
