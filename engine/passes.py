"""The render passes the NeAR engine writes, declared once for registration and for filling."""

from __future__ import annotations

from typing import NamedTuple


class PassSpec(NamedTuple):
    name: str  # Blender pass name (shown in the compositor / image editor)
    channels: int
    chan_id: str  # Blender channel letters, e.g. "RGBA", "Z", "XYZ"
    kind: str  # 'COLOR' | 'VECTOR' | 'VALUE'
    key: str  # key of the image the session produces for this pass


# Combined is Blender's own (always present); the rest are added by the engine.
COMBINED = PassSpec("Combined", 4, "RGBA", "COLOR", "rgba")
EXTRA_PASSES: tuple[PassSpec, ...] = (
    PassSpec("Depth", 1, "Z", "VALUE", "depth"),
    PassSpec("Alpha", 1, "A", "VALUE", "alpha"),
    PassSpec("Base Color", 3, "RGB", "COLOR", "base_color"),
    PassSpec("Roughness", 1, "X", "VALUE", "roughness"),
    PassSpec("Metallic", 1, "X", "VALUE", "metallic"),
    PassSpec("Shadow", 1, "X", "VALUE", "shadow"),
    PassSpec("Normal", 3, "XYZ", "VECTOR", "normal"),
)
ALL_PASSES: tuple[PassSpec, ...] = (COMBINED, *EXTRA_PASSES)
