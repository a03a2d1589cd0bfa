"""A tiny random pipeline for the evaluation tests (the tiny dataset is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    from tests.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("eval-pipe"))
