"""``near bench engine --quick``: runs NeAR and EEVEE Next on the same scene in a bpy subprocess and
reports consistent numbers (EEVEE's first frame compiles shaders: ~30-60 s on 2 cores)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("bpy")
pytestmark = [pytest.mark.bpy, pytest.mark.slow]


def test_quick_engine_benchmark_report():
    from near_blender.bench import engine, to_markdown

    report = engine.run(quick=True)
    table = report["tables"][0]
    assert table["columns"][0] == "size" and "NeAR speed-up" in table["columns"]
    (row,) = table["rows"]
    assert row[0] == "64²"
    near_s, near_warm, eevee_s, eevee_warm, speedup, lighting = row[1:]
    assert all(math.isfinite(v) and v > 0 for v in (near_s, near_warm, eevee_s, eevee_warm))
    assert speedup == pytest.approx(eevee_s / near_s)
    raw = {r["engine"]: r for r in report["meta"]["raw"]}
    # NeAR: the asset is encoded once (first frame), the orbiting camera re-encodes the lighting per frame
    assert raw["NEAR"]["cache"]["asset_misses"] == 1 and raw["NEAR"]["cache"]["asset_hits"] == 1
    assert lighting == raw["NEAR"]["cache"]["lighting_misses"] == 2
    assert raw["BLENDER_EEVEE"]["samples"] == 4 and raw["BLENDER_EEVEE"]["cache"].get("asset_misses", 0) == 0
    assert report["meta"]["voxels"] > 1000
    model = report["meta"]["model"]
    assert model.startswith(("bundled default model", "tiny random pipeline"))
    assert any(model in s for s in report["summary"])
    assert "| 64² |" in to_markdown(report)
