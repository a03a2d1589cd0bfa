"""Which NeAR model the add-on uses, loaded once per process and shared by F12, the viewport and
the operators.

Resolution order: ``$NEAR_MODEL`` (a pipeline folder or Hub id; for farms, batch renders and tests),
then the add-on preferences (bundled default | local folder | Hub repo), else the bundled default.
Hub downloads happen only when Blender's online access is allowed; the files are cached in the
extension's user folder (``bpy.utils.extension_path_user``), never in the extension itself.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from near_blender import NearError
from near_blender.models.hub import bundled_model_folder

_lock = threading.Lock()
_loaded: dict[tuple, Any] = {}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load, read from the preferences on Blender's main thread, so that a worker
    thread can load it without touching bpy. ``online``: Blender's online access at that moment."""

    kind: str  # ENV | BUNDLED | FOLDER | HUB
    where: str  # a pipeline folder or a Hub repository id
    revision: str | None
    device: str  # AUTO | CPU | CUDA
    online: bool = False
    cache_dir: str | None = None  # where Hub downloads go (the extension's user folder)


def model_spec(prefs: Any = None) -> ModelSpec:
    """The :class:`ModelSpec` of the environment / preferences (call on the main thread)."""
    env = os.environ.get("NEAR_MODEL")
    device = os.environ.get("NEAR_DEVICE", "AUTO")
    if env:
        return ModelSpec("ENV", env, None, device, _online_access())
    if prefs is None:
        return ModelSpec("BUNDLED", str(bundled_model_folder()), None, device)
    device = prefs.device
    if prefs.model_source == "FOLDER":
        if not prefs.model_folder:
            raise NearError("NeAR preferences: 'Local Folder' is selected but no folder is set.")
        import bpy

        return ModelSpec("FOLDER", bpy.path.abspath(prefs.model_folder), None, device)
    if prefs.model_source == "HUB":
        return ModelSpec(
            "HUB", prefs.hub_repo.strip(), prefs.hub_revision.strip() or None, device, _online_access()
        )
    return ModelSpec("BUNDLED", str(bundled_model_folder()), None, device)


def _online_access() -> bool:
    try:
        import bpy

        return bool(bpy.app.online_access)
    except (ImportError, AttributeError):  # outside Blender: the user's own environment decides
        return True


DEVICE_CHOICES = ("AUTO", "CPU", "CUDA")


def resolve_device(choice: str) -> str:
    """ "cpu" or "cuda" for a device choice (AUTO / CPU / CUDA, any case; ``$NEAR_DEVICE`` or the
    add-on preferences). An unknown name or CUDA without a GPU is an error, never a silent CPU."""
    import torch

    name = str(choice).strip().upper()
    if name not in DEVICE_CHOICES:
        raise NearError(
            f"Unknown NeAR device {choice!r}: use one of {', '.join(DEVICE_CHOICES)} ($NEAR_DEVICE or the add-on "
            "preferences' Device)."
        )
    if name == "CUDA":
        if not torch.cuda.is_available():
            raise NearError("NeAR preferences ask for CUDA but no CUDA GPU is available; choose Auto or CPU.")
        return "cuda"
    if name == "CPU":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_pipeline(spec: ModelSpec | Any = None) -> Any:
    """The loaded :class:`~near_blender.pipeline.NearPipeline` (cached per source and device).

    ``spec``: a :class:`ModelSpec` (what worker threads pass), or the add-on preferences / None
    (read here, so only on the main thread)."""
    if not isinstance(spec, ModelSpec):
        spec = model_spec(spec)
    device = resolve_device(spec.device)
    key = (spec.kind, spec.where, spec.revision, device)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        pipe = _load(spec, device)
        _loaded.clear()  # one model at a time: free the previous one
        _loaded[key] = pipe
        return pipe


def _load(spec: ModelSpec, device: str) -> Any:
    from near_blender.pipeline import NearPipeline

    kind, where = spec.kind, spec.where
    if kind == "BUNDLED" and not (Path(where) / "pipeline.json").is_file():
        raise NearError(
            f"The bundled default NeAR model is missing ({where}). Reinstall the extension, or choose a "
            "model folder / Hub repository in the add-on preferences."
        )
    from near_blender.models.hub import offline_mode

    cache_dir = spec.cache_dir if kind == "HUB" else None
    try:
        # Blender's online access decides, for this load only (no process-wide HF_HUB_OFFLINE)
        with offline_mode(not spec.online, "Blender's online access is off",
                          "allow it in Edit > Preferences > System > Network > Allow Online Access"):  # fmt: skip
            return NearPipeline.from_pretrained(
                where, revision=spec.revision, cache_dir=cache_dir, device=device
            )
    except NearError:
        raise
    except Exception as e:  # torch / safetensors failures deep inside loading
        raise NearError(f"Could not load the NeAR model from {where}: {type(e).__name__}: {e}") from None


def clear() -> None:
    with _lock:
        _loaded.clear()
