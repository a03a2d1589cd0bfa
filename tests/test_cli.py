"""The `near` command: help lists every sub-command; unimplemented ones say so plainly."""

from __future__ import annotations

import subprocess
import sys

from near_blender import cli


def test_help_lists_all_subcommands():
    proc = subprocess.run(
        [sys.executable, "-m", "near_blender.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for name in ("render", "datagen", "train", "eval", "import-image", "bench"):
        assert name in proc.stdout


def test_unimplemented_subcommand_says_so(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "frobnicate", ("does_not_exist", "placeholder"))
    assert cli.main(["frobnicate"]) == 3
    assert "not implemented yet" in capsys.readouterr().err


def test_user_errors_are_messages_not_tracebacks(capsys):
    assert cli.main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Unknown benchmark" in err and "Traceback" not in err
