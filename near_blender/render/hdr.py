"""Radiance HDR (``.hdr``, RGBE) reading, bpy-free, decoding as Blender does.

A file is a text header (``#?RADIANCE`` or ``#?RGBE``, ``FORMAT=32-bit_rle_rgbe``, a blank line),
a resolution line (``-Y H +X W``: rows top to bottom, the usual layout; ``+Y H +X W``: bottom to
top) and the pixels as RGBE bytes, each row flat, old-style run-length (``1 1 1 n``: repeat the
previous pixel) or new-style run-length (``2 2 W``: the four byte planes one after the other). A
pixel ``(r, g, b, e)`` is ``(r, g, b) * 2 ** (e - 136)``, 0 when ``e == 0`` -- Blender's (OpenImageIO's)
decoding, without the half-step offset of Greg Ward's original code, checked against
``bpy.data.images.load`` in the tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .. import NearError

_RESOLUTION = re.compile(rb"^([-+])Y (\d+) \+X (\d+)$")


def read_hdr(path: str | os.PathLike[str]) -> np.ndarray:
    """The image of a Radiance ``.hdr`` file: float32 ``[H, W, 3]`` scene-linear, row 0 at the top."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise NearError(f"Cannot read the HDR image {p} ({e.strerror or e}).") from None
    bad = f"{p.name} is not a Radiance HDR (RGBE) image"
    if not data.startswith((b"#?RADIANCE", b"#?RGBE")):
        raise NearError(f"{bad}: it does not start with '#?RADIANCE'. Use an .hdr or .exr HDRI.")
    end = data.find(b"\n\n")
    if end < 0:
        raise NearError(f"{bad}: its header never ends.")
    for line in data[:end].split(b"\n")[1:]:
        if line.startswith(b"FORMAT=") and line.strip() != b"FORMAT=32-bit_rle_rgbe":
            raise NearError(
                f"{p.name} stores {line[7:].decode(errors='replace')} pixels; NeAR reads RGB HDRs "
                "(FORMAT=32-bit_rle_rgbe). Re-save it as an RGB .hdr or an .exr."
            )
    eol = data.find(b"\n", end + 2)
    m = _RESOLUTION.match(data[end + 2 : eol if eol >= 0 else len(data)].strip())
    if m is None:
        raise NearError(
            f"{p.name}: unsupported resolution line (expected '-Y H +X W'); re-save the HDRI as a "
            "standard .hdr or an .exr."
        )
    flip, height, width = m.group(1) == b"+", int(m.group(2)), int(m.group(3))
    if height < 1 or width < 1:
        raise NearError(f"{p.name} is empty ({width}x{height}).")
    try:
        rgbe = _decode_rows(memoryview(data)[eol + 1 :], height, width)
    except IndexError:
        raise NearError(f"{p.name} is truncated or damaged: its pixel data ends early.") from None
    if flip:
        rgbe = rgbe[::-1]
    e = rgbe[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(np.float32(1.0), e - 136), np.float32(0.0)).astype(np.float32)
    return np.ascontiguousarray(rgbe[..., :3].astype(np.float32) * scale[..., None])


def _decode_rows(buf: memoryview, height: int, width: int) -> np.ndarray:
    """RGBE bytes ``[H, W, 4]`` of the scanlines in ``buf`` (raises IndexError when it ends early)."""
    out = np.empty((height, width, 4), np.uint8)
    pos = 0
    for row in range(height):
        head = bytes(buf[pos : pos + 4])
        if len(head) < 4:
            raise IndexError
        new_rle = 8 <= width < 32768 and head[0] == 2 and head[1] == 2 and not head[2] & 0x80
        if new_rle:
            if (head[2] << 8) | head[3] != width:
                raise IndexError
            pos += 4
            for c in range(4):
                plane = bytearray()
                while len(plane) < width:
                    n = buf[pos]
                    if n > 128:  # a run of one byte
                        plane += bytes((buf[pos + 1],)) * (n - 128)
                        pos += 2
                    else:  # n literal bytes
                        if n == 0 or pos + 1 + n > len(buf):
                            raise IndexError
                        plane += buf[pos + 1 : pos + 1 + n]
                        pos += 1 + n
                if len(plane) != width:
                    raise IndexError
                out[row, :, c] = np.frombuffer(bytes(plane), np.uint8)
        else:  # flat pixels, possibly with old-style runs (1, 1, 1, count) of the previous pixel
            col, shift = 0, 0
            while col < width:
                px = bytes(buf[pos : pos + 4])
                if len(px) < 4:
                    raise IndexError
                pos += 4
                if px[0] == 1 and px[1] == 1 and px[2] == 1 and col > 0:
                    n = px[3] << shift
                    if col + n > width:
                        raise IndexError
                    out[row, col : col + n] = out[row, col - 1]
                    col += n
                    shift += 8
                else:
                    out[row, col] = np.frombuffer(px, np.uint8)
                    col += 1
                    shift = 0
    return out
