"""Reading JSON or YAML config files with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import NearError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A mapping from a ``.json`` or ``.yaml``/``.yml`` file."""
    p = Path(path)
    if not p.is_file():
        raise NearError(f"Config file {p} not found.")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(p.read_text()) or {}
        else:
            data = json.loads(p.read_text())
    except Exception as e:  # parse errors of either format
        raise NearError(f"Cannot parse config file {p}: {e}") from None
    if not isinstance(data, dict):
        raise NearError(f"Config file {p} must hold a mapping of options.")
    return data
