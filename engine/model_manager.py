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
from pathlib import Path
from typing import Any

from near_blender import NearError

_lock = threading.Lock()
_loaded: dict[tuple, Any] = {}


def bundled_model_path() -> Path:
    """The default model shipped inside the ``near_blender`` package."""
    import near_blender

    return Path(near_blender.__file__).parent / "weights" / "near-default"


def model_spec(prefs: Any = None) -> tuple[str, str, str | None, str]:
    """(source kind, path or repo id, revision, device) from the environment / preferences."""
    env = os.environ.get("NEAR_MODEL")
    device = os.environ.get("NEAR_DEVICE", "AUTO")
    if env:
        return ("ENV", env, None, device)
    if prefs is None:
        return ("BUNDLED", str(bundled_model_path()), None, device)
    device = prefs.device
    if prefs.model_source == "FOLDER":
        if not prefs.model_folder:
            raise NearError("NeAR preferences: 'Local Folder' is selected but no folder is set.")
        import bpy

        return ("FOLDER", bpy.path.abspath(prefs.model_folder), None, device)
    if prefs.model_source == "HUB":
        return ("HUB", prefs.hub_repo.strip(), prefs.hub_revision.strip() or None, device)
    return ("BUNDLED", str(bundled_model_path()), None, device)


def resolve_device(choice: str) -> str:
    import torch

    if choice == "CUDA":
        if not torch.cuda.is_available():
            raise NearError("NeAR preferences ask for CUDA but no CUDA GPU is available; choose Auto or CPU.")
        return "cuda"
    if choice == "CPU":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_pipeline(prefs: Any = None) -> Any:
    """The loaded :class:`~near_blender.pipeline.NearPipeline` (cached per source and device)."""
    kind, where, revision, device_choice = model_spec(prefs)
    device = resolve_device(device_choice)
    key = (kind, where, revision, device)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        pipe = _load(kind, where, revision, device)
        _loaded.clear()  # one model at a time: free the previous one
        _loaded[key] = pipe
        return pipe


def _load(kind: str, where: str, revision: str | None, device: str) -> Any:
    from near_blender.pipeline import NearPipeline

    if kind == "BUNDLED" and not (Path(where) / "pipeline.json").is_file():
        raise NearError(
            f"The bundled default NeAR model is missing ({where}). Reinstall the extension, or choose a "
            "model folder / Hub repository in the add-on preferences."
        )
    cache_dir = None
    if kind == "HUB":
        import bpy

        if not bpy.app.online_access:
            os.environ["HF_HUB_OFFLINE"] = "1"  # use an already downloaded copy only
        try:
            cache_dir = bpy.utils.extension_path_user(__package__.rpartition(".")[0], path="hub", create=True)
        except (ValueError, AttributeError):  # not running as an installed extension
            cache_dir = None
    try:
        return NearPipeline.from_pretrained(where, revision=revision, cache_dir=cache_dir, device=device)
    except NearError:
        raise
    except Exception as e:  # torch / safetensors failures deep inside loading
        raise NearError(f"Could not load the NeAR model from {where}: {type(e).__name__}: {e}") from None


def clear() -> None:
    with _lock:
        _loaded.clear()
