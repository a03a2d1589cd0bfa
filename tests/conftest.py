"""Shared pytest set-up: deterministic seeds, small thread counts, and the bpy session helpers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture()
def one_thread():  # noqa: ANN201
    """One intra-op torch thread for the test: deterministic, immune to oversubscription on shared
    2-core runners, and faster for tiny models whose ops are too small to split."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# A tiny Cycles dataset (2 procedural assets, 24 px), shared per session (evaluation and training tests).
REPO = Path(__file__).resolve().parents[1]
# a purely diffuse sphere (Lambertian baselines must match Cycles on it) and a glossy torus
SPHERE = "proc:sphere,roughness=1,metallic=0,specular=0,base_color=0.7/0.3/0.2"
TORUS = "proc:torus,roughness=0.3,metallic=0,base_color=0.2/0.5/0.8"
TINY = ["--assets", SPHERE, TORUS, "--engine", "cycles", "--resolution", "24", "--samples", "32", "--no-denoise",
        "--homog-views", "2", "--shaded-views", "1", "--cond-views", "0", "--input-views", "2",
        "--relit-views", "1", "--relit-lights", "1", "--holdout-envmaps", "courtyard", "--holdout-renders", "all",
        "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    pytest.importorskip("bpy")
    out = tmp_path_factory.mktemp("eval-data")
    cmd = [
        sys.executable,
        "-m",
        "near_blender.cli",
        "datagen",
        "--out",
        str(out),
        *TINY,
        "--progress",
        "none",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "2 done, 0 failed" in r.stdout
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random NeAR pipeline, registered as the add-on's model for one test module (bpy)."""
    from tests.bpy_session import addon_with_model
    from tests.tiny_pipeline import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path_factory.mktemp("model"))
    with addon_with_model(folder):
        yield folder
