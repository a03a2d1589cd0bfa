"""Gradients of the torch backend: torch.autograd.gradcheck in float64 on tiny scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from near_blender.render import rasterize

W, H = 14, 11


def _scene(seed: int, n: int = 6, channels: int = 2) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    means = np.c_[rng.uniform(-0.35, 0.35, (n, 2)), rng.uniform(2.5, 3.5, n)]
    # three opaque Gaussians on the axis so that some pixels reach the transmittance stop
    means[:3, :2] = [[0.01, -0.02], [-0.02, 0.01], [0.0, 0.02]]
    means[:3, 2] = [2.0, 2.2, 2.4]
    scales = np.exp(rng.uniform(np.log(0.08), np.log(0.25), (n, 3)))
    opac = rng.uniform(0.3, 0.9, n)
    opac[:3] = 0.98
    scales[:3] = 0.3
    feats = rng.uniform(0.0, 1.0, (n, channels))
    bg = rng.uniform(0.0, 1.0, (1, channels))
    arrays = [means, rng.normal(size=(n, 4)), scales, opac, feats, bg]
    return [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def _fn(mode: str, camera_model: str):
    vm = torch.eye(4, dtype=torch.float64)[None]
    f = 18.0 if camera_model == "pinhole" else 7.0
    K = torch.tensor([[f, 0, W / 2 + 0.2], [0, f, H / 2 - 0.1], [0, 0, 1]], dtype=torch.float64)[None]

    def fn(means, quats, scales, opac, feats, bg):
        return rasterize(means, quats, scales, opac, feats, vm, K, W, H, backgrounds=bg, mode=mode,
                         camera_model=camera_model, backend="torch")  # fmt: skip

    return fn


@pytest.mark.parametrize("camera_model", ["pinhole", "ortho"])
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_gradcheck_fast(mode: str, camera_model: str) -> None:
    inputs = _scene(1)
    fn = _fn(mode, camera_model)
    c, a, _ = fn(*inputs)
    assert a.max() > 0.9995 and a.min() < 0.5  # the stop rule applies, and open background
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_full_jacobian() -> None:
    inputs = _scene(2, n=5, channels=1)
    assert torch.autograd.gradcheck(_fn("classic", "pinhole"), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_reach_every_input_and_skip_culled() -> None:
    means, quats, scales, opac, feats, bg = _scene(3)
    with torch.no_grad():
        means[-1, 2] = -1.0  # behind the camera: no gradient at all
        opac[-2] = -0.5  # negative opacity: culled
    c, a, d = _fn("classic", "pinhole")(means, quats, scales, opac, feats, bg)
    (c.sum() + a.sum() + d.sum()).backward()
    for g in (means.grad, quats.grad, scales.grad, opac.grad, feats.grad):
        assert torch.isfinite(g).all()
        assert g[:-2].abs().sum(-1 if g.dim() > 1 else 0).min() > 0 if g.dim() > 1 else g[:-2].abs().min() > 0
        assert g[-2:].abs().max() == 0


def test_gradcheck_camera_inputs() -> None:
    """viewmats and Ks are differentiable too (camera refinement)."""
    means, quats, scales, opac, feats, bg = (t.detach() for t in _scene(4))
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, 3] = torch.tensor([0.05, -0.02, 0.1], dtype=torch.float64)
    vm = vm[None].requires_grad_(True)
    K = torch.tensor([[[18.0, 0, W / 2 + 0.2], [0, 17.0, H / 2 - 0.1], [0, 0, 1]]], dtype=torch.float64)
    K.requires_grad_(True)

    def fn(vm, K):
        return rasterize(means, quats, scales, opac, feats, vm, K, W, H, backend="torch")

    assert torch.autograd.gradcheck(fn, (vm, K), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
