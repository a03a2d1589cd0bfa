"""The sRGB transfer curves of :mod:`near_blender.render.color`, against the standard and against
the formulas they replaced (procedural spec colours must not change by a bit)."""

from __future__ import annotations

import numpy as np
import pytest

from near_blender.data import procedural
from near_blender.render.color import linear_to_srgb, srgb_to_linear


def _old_scalar(c: float) -> float:  # data/procedural.py before the move
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


@pytest.mark.parametrize("library", ["v1", "v2"])
def test_procedural_spec_colours_are_unchanged(library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new = [procedural.procedural_spec(i, 0, library) for i in range(48)]
    monkeypatch.setattr(procedural, "srgb_to_linear", _old_scalar)
    old = [procedural.procedural_spec(i, 0, library) for i in range(48)]
    assert new == old


def test_scalar_is_the_double_precision_formula() -> None:
    for c in np.linspace(0.0, 1.0, 1001).tolist():
        got = srgb_to_linear(c)
        assert type(got) is float and got == _old_scalar(c)


def test_arrays_match_the_replaced_image_decoders() -> None:
    x = np.random.default_rng(0).uniform(0.0, 1.0, 4096)
    for a in (x.astype(np.float32), x):  # engine/scene_bridge (float32), commands/import_image (any)
        old = np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4).astype(np.float32)
        got = srgb_to_linear(a)
        assert got.dtype == np.float32 and np.array_equal(got, old)


def test_standard_values_and_round_trip() -> None:
    assert srgb_to_linear(0.5) == pytest.approx(0.214041, abs=1e-6)
    assert float(linear_to_srgb(np.array(0.214041))) == pytest.approx(0.5, abs=1e-6)
    x = np.linspace(0.0, 1.0, 257)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x).astype(np.float64)), x, atol=1e-6)
    assert (
        float(linear_to_srgb(np.array(2.0))) == pytest.approx(1.0)
        and float(linear_to_srgb(np.array(-1.0))) == 0.0
    )
