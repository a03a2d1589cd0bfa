"""Per-voxel feature extractors for the SLAT files (pluggable; paper 3.3 uses DINOv2).

An extractor turns one rendered view into a feature map (``view_maps``) and the back-projected
per-voxel statistics into the final features (``finalize``). Registered extractors:

``colour_normal`` (built in, no weights, the CPU default), 8 channels per voxel:

====  ===================  ===================================================================
ch    name                 value
====  ===================  ===================================================================
0-2   colour R, G, B       mean scene-linear colour of the voxel over the views that see it
                           (un-premultiplied); from ``homog`` views this is the homogenized
                           appearance (~ base colour for diffuse surfaces), from base-colour views
                           the base colour, from ``shaded`` views the rig-lit colour
3-5   normal x, y, z       mean world-space normal (Normal pass), not re-normalized: its length
                           drops below 1 where the voxel holds differently facing surfaces
6     view dependence      standard deviation over the seeing views of the luminance: 0 for a
                           Lambertian surface under the uniform white world, larger for glossy
                           ones (a specularity cue)
7     visibility           fraction of the views that see the voxel (an occlusion / cavity cue)
====  ===================  ===================================================================

``dinov2``: DINOv2 patch features (TRELLIS's ``dinov2_vitl14_reg``), needs local weights and an
encoder to 8-d latents (TRELLIS's SLAT VAE); both are hooks here and raise :class:`NearError`
naming what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .. import NearError
from .backproject import Aggregate

LUMA = np.array([0.2126, 0.7152, 0.0722])


class FeatureExtractor(Protocol):
    name: str
    channels: int  # per-voxel output channels

    def view_maps(self, rgb: np.ndarray, normal: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """[h, w, C] feature map of one view (rgb [H, W, 3] premultiplied, normal, alpha [H, W]).

        A map of the image's size is taken as premultiplied by alpha (the back-projection divides
        by the sampled alpha); a map of another size (e.g. a ViT patch grid) is sampled as is."""
        ...

    def finalize(self, agg: Aggregate) -> np.ndarray:
        """[N, channels] float32 per-voxel features from the back-projected statistics."""
        ...


class ColourNormalFeature:
    """The built-in 8-channel feature (see the module docstring)."""

    name = "colour_normal"
    channels = 8

    def view_maps(self, rgb: np.ndarray, normal: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        # Premultiplied (coverage-weighted) like the render passes themselves; the back-projection
        # divides by the sampled alpha, so edge pixels contribute their covered part only.
        colour = np.maximum(np.asarray(rgb, dtype=np.float64), 0.0)
        n = np.asarray(normal, dtype=np.float64)
        return np.concatenate([colour, n, (colour @ LUMA)[..., None]], axis=-1)

    def finalize(self, agg: Aggregate) -> np.ndarray:
        mean = agg.mean()
        std = agg.std()
        vis = agg.count / max(agg.n_views, 1)
        return np.concatenate([mean[:, :6], std[:, 6:7], vis[:, None]], axis=1).astype(np.float32)


class DinoV2Feature:
    """DINOv2 patch features: a hook. Producing 8-d SLAT features from them needs TRELLIS's SLAT
    encoder, which the stack does not have yet, so this raises a clear error either way."""

    name = "dinov2"
    channels = 8  # after the SLAT encoder

    def __init__(self, weights: str | None = None) -> None:
        path = weights or os.environ.get("NEAR_DINOV2_WEIGHTS")
        if not path or not os.path.exists(path):
            raise NearError(
                "The dinov2 feature extractor needs DINOv2 weights (set NEAR_DINOV2_WEIGHTS to a local "
                "checkpoint) and a SLAT encoder to 8-d latents; neither is available here. Use "
                "--features colour_normal, which needs no weights."
            )
        self.weights = path
        raise NearError(
            "DINOv2 features need an encoder to 8-d SLAT latents (TRELLIS's SLAT VAE), which this build "
            "does not have yet; use --features colour_normal."
        )

    def view_maps(
        self, rgb: np.ndarray, normal: np.ndarray, alpha: np.ndarray
    ) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def finalize(self, agg: Aggregate) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


EXTRACTORS: dict[str, Callable[..., Any]] = {"colour_normal": ColourNormalFeature, "dinov2": DinoV2Feature}


def get_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """An extractor by name (``colour_normal`` or ``dinov2``)."""
    try:
        factory = EXTRACTORS[name]
    except KeyError:
        raise NearError(f"Unknown feature extractor {name!r}; use one of {sorted(EXTRACTORS)}.") from None
    return factory(**kwargs)
