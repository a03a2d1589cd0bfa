"""Display transform, PSNR / SSIM plumbing and the contact sheet on known images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from near_blender.eval.report import LABEL_HEIGHT, contact_sheet, metrics_table
from near_blender.eval.scoring import PSNR_CAP_DB, score
from near_blender.render.tonemap import agx
from near_blender.render.tonemap import display_agx as display


def test_display_is_agx_over_black_and_sanitizes():
    hdr = np.array(
        [[[0.0, 0.0, 0.0], [0.18, 0.18, 0.18]], [[np.nan, -1.0, 5.0], [1e6, 1.0, 0.0]]], np.float32
    )
    d = display(hdr)
    assert d.shape == (2, 2, 3) and d.dtype == np.float32
    assert np.all(d[0, 0] < 1e-6)  # background stays black
    np.testing.assert_allclose(d[0, 1], agx(np.full((1, 3), 0.18, np.float32))[0], atol=1e-6)
    assert np.all(np.isfinite(d)) and d.min() >= 0 and d.max() <= 1


def test_psnr_and_ssim_of_known_images():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.2, 0.8, size=(16, 16, 3))
    s = score(gt + 0.1, gt, with_lpips=False)
    assert s["psnr"] == pytest.approx(20.0, abs=1e-9)  # MSE 0.01 -> 10 log10(1 / 0.01)
    noise = rng.choice([-0.05, 0.05], size=gt.shape)
    assert score(gt + noise, gt, with_lpips=False)["psnr"] == pytest.approx(
        10 * math.log10(1 / 0.0025), abs=1e-9
    )
    same = score(gt, gt, with_lpips=False)
    assert same["psnr"] == PSNR_CAP_DB and same["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert same["lpips"] is None
    # SSIM drops for a structural change (a flipped image), more than for a small offset
    assert (
        score(gt[::-1], gt, with_lpips=False)["ssim"] < 0.3 < score(gt + 0.02, gt, with_lpips=False)["ssim"]
    )


def test_metrics_table_means_and_skips_missing_lpips():
    rows = [
        {"task": "gbuffer_forward", "method": "ours", "psnr": 20.0, "ssim": 0.5, "lpips": None},
        {"task": "gbuffer_forward", "method": "ours", "psnr": 30.0, "ssim": 0.7, "lpips": None},
        {"task": "gbuffer_forward", "method": "lambertian", "psnr": 25.0, "ssim": 0.9, "lpips": 0.1},
    ]
    t = metrics_table(rows, ("gbuffer_forward", "novel_view_relighting"))
    assert t["gbuffer_forward"]["ours"] == {"psnr": 25.0, "ssim": pytest.approx(0.6), "lpips": None, "n": 2}
    assert t["gbuffer_forward"]["lambertian"]["lpips"] == 0.1
    assert t["novel_view_relighting"] == {}


def test_contact_sheet_layout():
    red = np.zeros((8, 8, 3), np.float32)
    red[..., 0] = 1.0
    sheet = contact_sheet([{"input": red, "gt": red, "ours": red}, {"gt": red}], cell=20)
    assert sheet.size == (6 * 20, LABEL_HEIGHT + 2 * 20)  # input, gt, ours, lambertian, baked, delit
    a = np.asarray(sheet)
    assert tuple(a[LABEL_HEIGHT + 10, 50]) == (255, 0, 0)  # row 0, column ours
    assert tuple(a[LABEL_HEIGHT + 18, 98]) == (48, 48, 48)  # row 0, column baked: n/a grey
    assert tuple(a[LABEL_HEIGHT + 18, 118]) == (48, 48, 48)  # row 0, column delit: n/a grey


def test_lpips_is_reported_when_its_weights_load(monkeypatch):
    """Plumbing only: a randomly initialised LPIPS network stands in for the pretrained one."""
    import torch

    from near_blender.train.lpips import LPIPS

    torch.manual_seed(0)
    net = LPIPS().eval()
    for lin in net.lins:  # LPIPS's calibration weights are non-negative
        lin.weight.data.abs_()
    monkeypatch.setattr(LPIPS, "_cache", net)
    rng = np.random.default_rng(3)
    a = rng.uniform(size=(64, 64, 3))
    same, other = score(a, a), score(a, rng.uniform(size=(64, 64, 3)))
    assert same["lpips"] == pytest.approx(0.0, abs=1e-9)
    assert other["lpips"] > 0
    assert score(a[:16, :16], a[:16, :16])["lpips"] is None  # too small for AlexNet
