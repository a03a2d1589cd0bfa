"""``near bench stage1 --quick``: stage 1 of the bundled model on a sphere shell of voxels, with its
synthetic input image lined up with the voxels (the delighting sees a large part of the shell)."""

from __future__ import annotations

import numpy as np

from near_blender.bench import stage1
from near_blender.bench.sparse import shell_voxels
from near_blender.data.image_projection import project_image_features


def test_shell_image_lines_up_with_its_voxels() -> None:
    coords = shell_voxels(5000).numpy().astype(np.int64)
    rgba, V, K = stage1.shell_image(coords, 128)
    assert rgba.shape == (128, 128, 4) and 0.1 < (rgba[..., 3] > 0.5).mean() < 0.9
    seen = project_image_features(rgba, V, K, coords)[:, 3] > 0.5
    assert 0.3 < seen.mean() < 0.7  # about the half of a sphere that faces the camera


def test_quick_stage1_benchmark_reports_the_delighting_time() -> None:
    report = stage1.run(quick=True)
    row = dict(zip(report["tables"][0]["columns"], report["tables"][0]["rows"][0]))
    assert row["voxels"] == 5000 and 0 < row["delight_again_s"] <= row["delight_first_s"] * 1.5
