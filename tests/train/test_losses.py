"""Each loss term against a value computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from near_blender import NearError
from near_blender.models.flow_matching import interpolate
from near_blender.train import losses as L
from near_blender.train import metrics as M


def img(v, H=4, W=4, C=3):
    return torch.full((1, H, W, C), float(v), dtype=torch.float64)


def test_log_l1_is_l1_of_log1p():
    assert float(L.log_l1(img(1.0), img(0.0))) == pytest.approx(math.log(2.0))
    # HDR values far apart are compressed: |log(101) - log(11)|
    assert float(L.log_l1(img(100.0), img(10.0))) == pytest.approx(math.log(101 / 11))
    mask = torch.zeros(1, 4, 4, 1, dtype=torch.float64)
    mask[0, 0, 0] = 1
    p = img(0.0)
    p[0, 0, 0] = math.e - 1  # only the masked pixel counts
    assert float(L.log_l1(p, img(0.0), mask)) == pytest.approx(1.0)


def test_ssim_of_flat_images_is_the_luminance_term():
    a, b = 0.5, 0.25
    c1 = (0.01 * 1.0) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    # (pytorch-msssim's float32 window sums to 1 - 1e-7, which leaves a 1e-5 structure term)
    assert float(L.ssim(img(a, 16, 16), img(b, 16, 16))) == pytest.approx(want, rel=2e-5)
    assert M.ssim(img(a, 16, 16)[0].numpy(), img(a, 16, 16)[0].numpy()) == pytest.approx(1.0)


def test_volume_opacity_and_flow_terms():
    s = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    assert float(L.volume_loss(s)) == pytest.approx(3.5)
    assert float(L.volume_loss(s, torch.tensor([[2.0, 2.0, 2.0]]))) == pytest.approx(11.5)
    assert float(L.opacity_loss(torch.tensor([0.5, 1.0, -1.0]))) == pytest.approx((0.25 + 0 + 4) / 3)
    # flow matching (paper eq. 4 is sigma_min = 0): x_t = (1 - t) x0 + t eps, target v = eps - x0
    x0, eps = torch.ones(5, 8), torch.zeros(5, 8)
    z, v = interpolate(x0, eps, torch.tensor([0.25] * 5)[:, None], sigma_min=0.0)
    assert torch.allclose(z, torch.full((5, 8), 0.75))
    assert torch.equal(v, eps - x0)


def test_stage2_total_is_the_weighted_sum():
    torch.manual_seed(0)
    gt = {
        k: torch.rand(2, 8, 8, c)
        for k, c in [("hdr", 3), ("base_color", 3), ("roughness", 1), ("metallic", 1), ("shadow", 1)]
    }
    gt["mask"] = torch.ones(2, 8, 8, 1)
    pred = {k: torch.rand_like(v) for k, v in gt.items() if k != "mask"}
    pred["scales"] = torch.rand(10, 3) * 0.01
    pred["light_scales"] = torch.rand(10, 3) * 0.01
    pred["opacities"] = torch.rand(10)
    fn = L.Stage2Loss(tonemap=lambda x: x.clamp(0, 1))
    out = fn(pred, gt)
    pbr = sum(float((pred[k] - gt[k]).abs().mean()) for k in ("base_color", "roughness", "metallic"))
    want = (
        float((torch.log1p(pred["hdr"]) - torch.log1p(gt["hdr"])).abs().mean())
        + 0.2 * (1 - float(L.ssim(pred["hdr"], gt["hdr"])))
        + 0.3 * pbr
        + 0.5 * float((pred["shadow"] - gt["shadow"]).abs().mean())
        + 1e4 * float(pred["scales"].prod(-1).mean() + pred["light_scales"].prod(-1).mean())
        + 1e-3 * float(((1 - pred["opacities"]) ** 2).mean())
    )
    assert float(out["total"]) == pytest.approx(want, rel=1e-6)
    assert "lpips" not in out  # no backbone weights here: the term is absent, not invented


def test_psnr_and_shape_errors():
    assert M.psnr(img(0.0)[0].numpy(), img(0.1)[0].numpy()) == pytest.approx(20.0)
    assert M.psnr(img(0.3), img(0.3)) == math.inf
    with pytest.raises(NearError, match="shape"):
        L.log_l1(img(0, 4, 4), img(0, 4, 5))
