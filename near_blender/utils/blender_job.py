"""Run a Blender job (the bpy module or a ``blender`` binary) in a subprocess and follow it.

The job prints progress as lines ``NEAR_EVENT {json}``; every other line is Blender's own output,
kept in a log file and in a short tail for error messages. Ctrl-C terminates the job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .. import NearError

EVENT_PREFIX = "NEAR_EVENT "


def find_blender(explicit: str | None) -> list[str]:
    """Command prefix that runs a Python script in Blender: ``[blender, -b, ..., --python]`` for a
    Blender binary (``explicit``, then ``$BLENDER``, then ``blender`` on PATH), else ``[python]``
    when this Python has the bpy module."""
    if explicit:
        p = shutil.which(explicit) or explicit
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            raise NearError(
                f"--blender {explicit}: not an executable file. Give the path of the blender binary."
            )
        return [p, "-b", "--python-exit-code", "1", "--python"]
    for cand in (os.environ.get("BLENDER"), shutil.which("blender")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return [cand, "-b", "--python-exit-code", "1", "--python"]
    if importlib.util.find_spec("bpy") is not None:
        return [sys.executable]
    raise NearError(
        "No Blender found: pass --blender PATH, set $BLENDER, put blender on PATH, or install the bpy "
        "module in this Python (pip install bpy==5.0.1)."
    )


def extension_roots() -> list[Path]:
    """Folders that may hold the extension (``__init__.py``, ``engine/``, ``operators/``, ``ui/``):
    the source checkout around ``near_blender/``, then the ``near_addon`` package that the wheel
    installs beside ``near_blender`` (``setup.py``)."""
    import near_blender

    roots = [Path(near_blender.__file__).resolve().parents[1]]
    spec = importlib.util.find_spec("near_addon")
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p).resolve() for p in spec.submodule_search_locations]
    return list(dict.fromkeys(roots))


def extension_script(relpath: str, missing_hint: str = "") -> Path:
    """A Blender-side script of the extension (``relpath`` from the extension root, e.g.
    ``operators/datagen/headless.py``), from a source checkout or the installed wheel;
    ``missing_hint`` completes the error when neither has it."""
    roots = extension_roots()
    for root in roots:
        if (root / relpath).is_file():
            return root / relpath
    raise NearError(
        f"The Blender-side script {relpath} is missing (looked in {', '.join(map(str, roots))}). "
        "Reinstall near-blender (`pip install near-blender`, or `make setup` in a checkout): its wheel "
        f"ships the extension's scripts as the package near_addon. {missing_hint}".rstrip()
    )


def blender_command(prefix: list[str], script: Path, args: list[str]) -> list[str]:
    """The full command: ``python script ARGS`` (bpy module) or ``blender ... script -- ARGS``."""
    return [*prefix, str(script), *([] if len(prefix) == 1 else ["--"]), *args]


def run_blender_events(
    cmd: list[str], on_event: Callable[[dict[str, Any]], None], log: IO[str] | None = None, keep: int = 40
) -> tuple[int, list[str]]:
    """Run ``cmd``, call ``on_event`` for each event, write other lines to ``log``; returns
    (exit code, the last ``keep`` non-event lines)."""
    tail: list[str] = []
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), errors="replace",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX):
                on_event(json.loads(line[len(EVENT_PREFIX) :]))
                continue
            if log is not None:
                log.write(line)
            tail = (tail + [line.rstrip()])[-keep:]
        return proc.wait(), tail
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise


def run_logged(
    cmd: list[str],
    on_event: Callable[[dict[str, Any]], None],
    command: str,
    log_path: Path,
    finish: Callable[[], Any] | None = None,
    append: bool = True,
) -> None:
    """:func:`run_blender_events` with Blender's output in ``log_path`` (the command line first when
    appending); calls ``finish`` (e.g. closing a progress bar) however the job ends, and raises
    :func:`blender_failure` when it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a" if append else "w", encoding="utf-8") as log:
        if append:
            log.write("$ " + " ".join(cmd) + "\n")
        try:
            code, tail = run_blender_events(cmd, on_event, log)
        finally:
            if finish is not None:
                finish()
    if code != 0:
        raise blender_failure(command, code, tail, log_path)


def blender_failure(
    command: str, code: int, tail: list[str], log_path: Path | None = None, hint: str = ""
) -> NearError:
    """The error for a failed job: the job's own ``<command>: error: ...`` line when it printed one
    (plus ``hint``), else the exit status and the end of Blender's output."""
    errors = [t.split("error: ", 1)[1] for t in tail if t.startswith(f"{command}: error: ")]
    if errors:
        return NearError(errors[-1] + hint)
    where = f" (full log: {log_path})" if log_path is not None else ""
    return NearError(f"Blender exited with status {code}{where}:\n" + "\n".join(tail[-15:]))
