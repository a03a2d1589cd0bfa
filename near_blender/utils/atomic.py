"""Atomic file writes: write to a temporary file beside the target, fsync, then rename.

A reader (or a resumed job) therefore sees either the old file or the complete new one, never a
half-written file, even if the process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    The temporary file keeps the target's extension (or ``suffix``) so that libraries which pick a
    format from the file name (OpenEXR, PIL, numpy) behave as for the real name. On error the
    temporary file is removed and the target is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = suffix if suffix is not None else "".join(path.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_MARKER}{path.stem}-", suffix=ext, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; finished files get the usual rw-r--r--
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o644)  # again: some writers (safetensors) re-create the file as 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Serialize ``obj`` as JSON and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def folder_write_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written into ``folder`` (created when missing), or None when they can:
    checked by writing and removing a probe file, so permissions, read-only mounts and a file in
    the way all show before a long job starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return "it is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".near-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def check_writable_file(path: str | os.PathLike[str], flag: str) -> None:
    """Raise :class:`~near_blender.NearError` unless ``path`` can be written atomically (its folder,
    created when missing, takes new files; ``path`` itself is not a folder). ``flag`` names the
    option or field to change in the message."""
    from .. import NearError

    path = Path(path)
    if path.is_dir():
        raise NearError(f"{flag} {path} is a folder; give a file name.")
    problem = folder_write_problem(path.parent)
    if problem:
        raise NearError(f"Cannot write {path}: {path.parent}: {problem}. Choose another place with {flag}.")


def temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files (``.tmp-*``) under ``folder`` (recursively)."""
    return [p for p in Path(folder).rglob(f"{TMP_MARKER}*") if p.is_file()]


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporaries left by a killed writer in ``folder`` (recursively); return them."""
    removed = temporaries(folder)
    for p in removed:
        p.unlink()
    return removed


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # Directory fsync makes the rename durable on POSIX; unsupported on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
