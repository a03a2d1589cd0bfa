"""Frame lists for batch renders: ``"1-4,7"`` -> ``[1, 2, 3, 4, 7]``."""

from __future__ import annotations

import re

from .. import NearError

_PART = re.compile(r"^\s*(-?\d+)\s*(?:(?:-|\.\.)\s*(-?\d+)\s*(?::\s*(\d+)\s*)?)?$")


def parse_frames(spec: str) -> list[int]:
    """Frames of a comma-separated spec of single frames and inclusive ranges ``A-B`` (or ``A..B``,
    optionally with a step ``A-B:S``), in the given order without duplicates."""
    if not spec or not spec.strip():
        raise NearError("--frames is empty; give frames like 1-4,7.")
    out: list[int] = []
    seen: set[int] = set()
    for part in spec.split(","):
        m = _PART.match(part)
        if m is None:
            raise NearError(
                f"Cannot read the frame range {part.strip()!r} in --frames {spec!r}; use e.g. 1-4,7."
            )
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        step = int(m.group(3)) if m.group(3) is not None else 1
        if b < a:
            raise NearError(f"Frame range {part.strip()!r} ends before it starts.")
        if step < 1:
            raise NearError(f"Frame range {part.strip()!r} needs a positive step.")
        for f in range(a, b + 1, step):
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


def parse_resolution(spec: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec or "")
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise NearError(f"--resolution {spec!r}: use WIDTHxHEIGHT, e.g. 1920x1080.")
    return int(m.group(1)), int(m.group(2))
