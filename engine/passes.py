"""The render passes the NeAR engine writes: declared once in :mod:`near_blender.render.passes`
(``near render ASSET.npz`` writes the same passes without Blender)."""

from __future__ import annotations

from near_blender.render.passes import ALL_PASSES, COMBINED, EXTRA_PASSES, PassSpec

__all__ = ["ALL_PASSES", "COMBINED", "EXTRA_PASSES", "PassSpec"]
