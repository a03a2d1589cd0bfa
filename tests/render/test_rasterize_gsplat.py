"""The gsplat (CUDA) backend agrees with the torch backend (runs only where CUDA is available)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from near_blender.render import rasterize

from .scenes import pinhole_K, random_scene

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

W, H = 96, 80


@pytest.mark.parametrize("channels", [3, 33])
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
@pytest.mark.parametrize("camera_model", ["pinhole", "ortho"])
def test_torch_matches_gsplat(channels: int, mode: str, camera_model: str) -> None:
    rng = np.random.default_rng(channels)
    scene = random_scene(rng, 400, channels)
    K = pinhole_K(W, H, 80.0) if camera_model == "pinhole" else np.diag([30.0, 30.0, 1.0])
    K[:2, 2] = [W / 2, H / 2]
    args = [torch.as_tensor(scene[k], dtype=torch.float32, device="cuda")
            for k in ("means", "quats", "scales", "opacities", "features")]  # fmt: skip
    vm = torch.eye(4, device="cuda")[None]
    Kt = torch.as_tensor(K, dtype=torch.float32, device="cuda")[None]
    bg = torch.rand(1, channels, device="cuda")
    for a in args:
        a.requires_grad_(True)
    outs, grads = {}, {}
    for backend in ("gsplat", "torch"):
        c, a, d = rasterize(*args, vm, Kt, W, H, backgrounds=bg, mode=mode, camera_model=camera_model,
                            backend=backend)  # fmt: skip
        outs[backend] = (c, a, d)
        grads[backend] = torch.autograd.grad((c.sum() + a.sum() + 0.1 * d.sum()), args, allow_unused=True)
    for x, y in zip(outs["gsplat"], outs["torch"]):
        assert (x - y).abs().max() < 1e-4
    for gx, gy in zip(grads["gsplat"], grads["torch"]):
        if gx is None or gy is None:
            continue
        scale = gx.abs().max().clamp_min(1e-6)
        assert ((gx - gy).abs().max() / scale) < 1e-2
