"""AgX / Standard / log view transforms: numpy (OCIO) is Blender's; torch matches it, differentiably."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from simple_ocio import ToneMapper

from near_blender import NearError
from near_blender.render.tonemap import agx, log_transform, standard, tonemap


def _hdr_samples(rng: np.random.Generator) -> np.ndarray:
    v = np.logspace(-4, 4, 1601)
    grey = np.stack([v, v, v], -1)
    colours = np.exp(rng.uniform(np.log(1e-4), np.log(1e4), (20000, 3)))
    saturated = colours * (rng.uniform(0, 1, (20000, 3)) < 0.3)  # pure primaries and zeros
    return np.concatenate([grey, colours, saturated]).astype(np.float32)


@pytest.mark.bpy
def test_numpy_is_blenders_own_view_transform(rng: np.random.Generator) -> None:
    """Blender itself is the reference: an HDR float image saved through its colour management (the
    scene's AgX / Standard view, no look, no dither) as a 16-bit PNG, read back raw."""
    import bpy

    from tests.bpy_session import empty_scene

    scene = empty_scene()
    v = np.logspace(-3, 2, 2048)
    x = np.concatenate([np.stack([v, v, v], -1), np.exp(rng.uniform(np.log(1e-3), np.log(1e2), (2048, 3)))])
    x = x.astype(np.float32)
    img = bpy.data.images.new("hdr", 64, 64, alpha=True, float_buffer=True)
    img.pixels.foreach_set(np.concatenate([x, np.ones((len(x), 1), np.float32)], -1).ravel())
    settings = scene.render.image_settings
    settings.file_format, settings.color_depth, settings.color_mode = "PNG", "16", "RGB"
    scene.render.dither_intensity = 0.0
    for view in ("AgX", "Standard"):
        scene.view_settings.view_transform, scene.view_settings.look = view, "None"
        path = Path(bpy.app.tempdir or "/tmp") / f"near-view-{view}.png"
        img.save_render(str(path), scene=scene)
        out = bpy.data.images.load(str(path))
        out.colorspace_settings.name = "Non-Color"  # the display values as stored
        buf = np.empty(64 * 64 * 4, np.float32)
        out.pixels.foreach_get(buf)
        err = np.abs(buf.reshape(-1, 4)[:, :3] - tonemap(x, view))
        assert err.max() < 5e-4, (view, err.max())  # measured 1.5e-4 (AgX), 8e-6 (Standard)
    assert tonemap(x.reshape(-1, 8, 3), "AgX").shape == (x.shape[0] // 8, 8, 3)


@pytest.mark.parametrize("view", ["AgX", "Standard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_ocio(view: str, dtype: torch.dtype, rng: np.random.Generator) -> None:
    x = _hdr_samples(rng)
    ref = ToneMapper(view=view).hdr_to_ldr(x)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    y = tonemap(xt, view)
    assert y.dtype == dtype and y.shape == xt.shape
    err = np.abs(y.detach().double().numpy() - ref).max()
    assert err < 2e-3, err
    (y * torch.linspace(0.5, 1.5, 3, dtype=dtype)).sum().backward()
    assert torch.isfinite(xt.grad).all()
    # mid-range values have a non-zero slope (AgX's LUT is not flat there; Standard clips at 1)
    mid = (x.min(-1) > 1e-2) & (x.max(-1) < (10 if view == "AgX" else 0.9))
    assert (xt.grad[torch.from_numpy(mid)].abs().sum(-1) > 0).all()


def test_agx_anchor_values() -> None:
    y = agx(np.array([[0.18] * 3, [1.0] * 3, [0.0] * 3], np.float32))
    assert np.allclose(y[0], 0.461, atol=2e-3) and np.allclose(y[1], 0.771, atol=2e-3)
    assert np.abs(y[2]).max() < 1e-6
    yt = agx(torch.tensor([[0.18] * 3, [1.0] * 3]))
    assert torch.allclose(yt, torch.from_numpy(y[:2]), atol=1e-4)


def test_agx_gradient_is_finite_at_zero_and_negative() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.5, 2.0], [1e-30, 1e6, 3.0]], requires_grad=True)
    agx(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_standard_is_srgb() -> None:
    x = np.array([[0.0, 0.001, 0.5], [1.0, 2.0, 0.2]], np.float32)
    y = standard(x)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.clip(x, 0, None), 1 / 2.4) - 0.055)
    assert np.allclose(y, np.clip(srgb, 0, 1), atol=2e-4)


def test_log_transform() -> None:
    x = np.array([0.0, 1.0, np.e - 1.0, -3.0])
    assert np.allclose(log_transform(x), [0.0, np.log(2.0), 1.0, 0.0])
    xt = torch.tensor(x, requires_grad=True)
    y = tonemap(xt, "Log")
    y.sum().backward()
    assert torch.allclose(y, torch.tensor([0.0, np.log(2.0), 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(xt.grad, torch.tensor([1.0, 0.5, 1 / np.e, 0.0], dtype=torch.float64))


def test_bad_view_and_shape() -> None:
    with pytest.raises(NearError, match="Unknown view"):
        tonemap(np.zeros((2, 3)), "Filmic")
    with pytest.raises(NearError, match=r"\[\.\.\., 3\]"):
        tonemap(np.zeros((2, 4)), "AgX")
    with pytest.raises(NearError, match=r"\[\.\.\., 3\]"):
        tonemap(torch.zeros(2, 4), "AgX")
