"""Colour transfer functions: the sRGB piecewise curves of IEC 61966-2-1 (numpy, no OCIO).

These are the plain curves (image files, procedural spec colours, the tokenizer's LDR channel);
Blender's view transforms (AgX, Standard through OCIO) live in :mod:`near_blender.render.tonemap`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def srgb_to_linear(x: Any) -> Any:
    """The sRGB EOTF (decoding), elementwise on [0, 1] values.

    A Python ``float`` gives a Python ``float`` (computed in double precision: the procedural
    spec colours depend on it to the bit); anything else is computed as an array in its own float
    precision (at least float32) and returned as float32.
    """
    if isinstance(x, int | float):
        return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB OETF (encoding) of linear values, clipped to [0, 1] first; keeps the dtype."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
