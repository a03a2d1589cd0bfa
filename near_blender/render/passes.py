"""The render passes of a NeAR frame, declared once: what the Blender engine registers and fills
(F12, ``blender -b -f``) and what ``near render ASSET.npz`` writes without Blender.

A frame's passes are images with row 0 at the top, keyed by :attr:`PassSpec.key`: ``rgba``
[H, W, 4] (Combined: scene-linear, composited over the world unless the film is transparent),
``depth`` [H, W, 1] (metres along the optical axis, 1e10 where empty), ``alpha``, ``base_color``,
``roughness``, ``metallic``, ``shadow`` and ``normal`` (world space). In a multilayer EXR a pass's
channels are named as Blender names them: ``<view layer>.<pass name>.<channel letter>``, e.g.
``ViewLayer.Combined.R``, ``ViewLayer.Depth.Z``, ``ViewLayer.Base Color.G``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .camera import Camera
from .envmap import Environment

VIEW_LAYER = "ViewLayer"  # Blender's default view layer name, the channel prefix of a frame's EXR
EMPTY_DEPTH = 1e10  # depth where nothing was hit (Blender's Z pass of the world)


class PassSpec(NamedTuple):
    name: str  # Blender pass name (shown in the compositor / image editor)
    channels: int
    chan_id: str  # Blender channel letters, e.g. "RGBA", "Z", "XYZ"
    kind: str  # 'COLOR' | 'VECTOR' | 'VALUE'
    key: str  # key of the image a render produces for this pass


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


def pass_images(
    camera: Camera,
    env: Environment,
    images: dict[str, np.ndarray],
    transparent: bool = False,
    background_strength: float = 1.0,
) -> dict[str, np.ndarray]:
    """A :class:`~near_blender.scene.SceneRenderer`'s images as the frame's passes: ``rgba``
    composited over the world seen through ``camera`` (times ``background_strength``) unless
    ``transparent`` (then premultiplied RGBA), ``depth`` :data:`EMPTY_DEPTH` where nothing was hit,
    the PBR and shadow passes as they are."""
    from ..scene import composite_over

    background = None
    if not transparent:
        _, dirs = camera.pixel_rays()
        background = (env.radiance_at(dirs) * background_strength).astype(np.float32)
    out = {spec.key: images[spec.key] for spec in EXTRA_PASSES if spec.key in images}
    out["rgba"] = composite_over(images, background)
    out["depth"] = np.where(images["alpha"] > 1e-6, images["depth"], np.float32(EMPTY_DEPTH)).astype(
        np.float32
    )
    return out


def exr_channels(passes: dict[str, np.ndarray], layer: str = VIEW_LAYER) -> dict[str, np.ndarray]:
    """The passes as multilayer-EXR channels ``<layer>.<pass name>.<letter>`` -> [H, W] (Blender's
    names, so a frame written by ``near render ASSET.npz`` reads like an F12 frame)."""
    out: dict[str, np.ndarray] = {}
    for spec in ALL_PASSES:
        img = passes[spec.key]
        for i, letter in enumerate(spec.chan_id):
            out[f"{layer}.{spec.name}.{letter}"] = img[..., i]
    return out
