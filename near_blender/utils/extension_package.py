"""Load the extension root (the repository's ``__init__.py`` with ``engine/``, ``operators/``, ...)
as an importable package, for scripts that Blender runs directly (``blender -b --python``) and
for tests, where the add-on is not installed as an extension. bpy-free."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_extension_package(root: str | Path, name: str) -> ModuleType:
    """The package ``name`` loaded from ``root/__init__.py`` (once; later calls return it)."""
    if name in sys.modules:
        return sys.modules[name]
    root = Path(root)
    spec = importlib.util.spec_from_file_location(
        name, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load the extension package from {root}.")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
