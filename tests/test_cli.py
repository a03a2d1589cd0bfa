"""The `near` command: help lists every sub-command, each is built, errors are messages."""

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


def test_every_subcommand_is_built():
    for name in cli.COMMANDS:  # each one imports and has its arguments and its entry point
        mod = cli._load(name)
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_user_errors_are_messages_not_tracebacks(capsys):
    assert cli.main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Unknown benchmark" in err and "Traceback" not in err


def test_gpu_benchmark_without_a_gpu_is_a_clear_error_and_all_skips_it(capsys, monkeypatch, tmp_path):
    import torch

    from near_blender.bench import BENCHMARKS

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "decoder-gpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA device" in err and "tools/gpu_check.sh" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written
    # `all` leaves it out (the other benchmarks are replaced by a no-op to keep this test short)
    monkeypatch.setattr("near_blender.commands.bench.BENCHMARKS", {"decoder-gpu": BENCHMARKS["decoder-gpu"]})
    assert cli.main(["bench", "all", "--out", str(tmp_path)]) == 0
    assert "no CUDA device, skipping decoder-gpu" in capsys.readouterr().out


def test_train_rejects_a_non_positive_step_count(capsys, tmp_path):
    for stage in ("stage1", "stage2"):
        assert cli.main(["train", stage, "--steps", "-5", "--out", str(tmp_path / "run")]) == 2
        assert "--steps -5: give a positive number of optimizer steps" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
