"""Checkpoint compatibility: run published weights exactly as their authors' code ran them.

Every model whose forward pass differs between the published TRELLIS / NeAR code and the paper's
description takes a constructor argument ``compat``:

* ``"published"`` (the default, so a published ``{"name": "SLatFlowModel", ...}`` or
  ``{"name": "SLatGaussianRenderer", ...}`` JSON without the key selects it): the behaviour the
  published weights were trained with --

  - sparse pooling in the SLAT flow divides the sum of a coarse voxel's n children by n + 1
    (:data:`near_blender.sparse.POOL_DIVISORS`);
  - the lighting-aware decoder reads every attribute group of its Gaussians (intrinsic, PBR,
    view-dependent scale, lighting) from the start of the concatenated head outputs, so the PBR
    and view-scale groups read the Gaussian head's first channels and the lighting group spans
    several heads (:meth:`near_blender.models.gaussian_head.GaussianLayout.read_out`);
  - the camera centre of the view embedding and of the normal orientation is the translation of
    the inverted 4x4 world-to-camera matrix (:func:`.view_embedding.camera_centres`).

* ``"near"`` (this project's checkpoints): the paper's layout -- the true mean, one channel range
  per head, and the closed-form centre ``-R^T t``.

A checkpoint's JSON records the mode it was trained with (``save_pretrained`` writes every
constructor argument), so our checkpoints and published ones each load with their own behaviour.
"""

from __future__ import annotations

from typing import Literal

from .. import NearError

Compat = Literal["published", "near"]
COMPAT_MODES: tuple[str, ...] = ("published", "near")
# what a checkpoint JSON without a "compat" argument gets: published JSONs never carry the key
DEFAULT_COMPAT: Compat = "published"


def check_compat(compat: str) -> Compat:
    """``compat`` if it is a known mode, else a NearError naming the choices."""
    if compat not in COMPAT_MODES:
        raise NearError(
            f'Unknown checkpoint compatibility {compat!r}: set "compat" in the model\'s JSON args to '
            f'one of {COMPAT_MODES} ("published" for the authors\' weights, "near" for ours).'
        )
    return compat  # type: ignore[return-value]


def pool_divisor(compat: str) -> str:
    """The sparse pooling divisor of a mode (see :func:`near_blender.sparse.sparse_downsample`)."""
    return "count_plus_one" if check_compat(compat) == "published" else "count"


def centre_method(compat: str) -> str:
    """How camera centres are computed in a mode: ``"inverse"`` (4x4 matrix inverse) or ``"closed_form"``."""
    return "inverse" if check_compat(compat) == "published" else "closed_form"


def shared_read_out(compat: str) -> bool:
    """Whether the decoder's attribute groups all read from the start of the concatenated heads."""
    return check_compat(compat) == "published"
