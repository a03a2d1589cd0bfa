"""rasterize(backend="torch") against the independent float64 brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from near_blender.render import rasterize
from near_blender.render._composite import CompositeConfig

from .reference_raster import reference_rasterize
from .scenes import look_at_viewmat, pinhole_K, random_scene

W, H = 45, 37  # not multiples of the block / tile sizes on purpose


def _t(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _render(scene, viewmats, Ks, dtype, **kw):
    return rasterize(
        _t(scene["means"], dtype), _t(scene["quats"], dtype), _t(scene["scales"], dtype),
        _t(scene["opacities"], dtype), _t(scene["features"], dtype),
        _t(viewmats, dtype), _t(Ks, dtype), W, H, backend="torch", **kw,
    )  # fmt: skip


def _max_errors(out, ref) -> list[float]:
    return [float(np.abs(o.double().numpy() - r).max()) for o, r in zip(out, ref)]


@pytest.mark.parametrize("channels", [1, 3, 8, 33])
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_matches_reference_pinhole(channels: int, mode: str) -> None:
    rng = np.random.default_rng(100 + channels)
    scene = random_scene(rng, 150, channels)
    vm, K = np.eye(4), pinhole_K(W, H, 40.0)
    bg = rng.uniform(0, 1, channels)
    aa = mode == "antialiased"
    ref = reference_rasterize(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["features"],
        vm, K, W, H, background=bg, antialiased=aa,
    )  # fmt: skip
    # the scene really exercises the rules: partial coverage, saturated pixels, the background
    assert ref[1].min() < 0.5 and ref[1].max() > 1 - 1e-3
    for dtype in (torch.float64, torch.float32):
        out = _render(scene, vm[None], K[None], dtype, backgrounds=_t(bg, dtype)[None], mode=mode)
        assert [tuple(o.shape) for o in out] == [(1, H, W, channels), (1, H, W, 1), (1, H, W, 1)]
        out = [o[0] for o in out]
        errs = _max_errors(out, ref)
        assert max(errs) < (1e-9 if dtype == torch.float64 else 1e-4), (dtype, errs)


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_matches_reference_ortho(mode: str) -> None:
    rng = np.random.default_rng(7)
    scene = random_scene(rng, 150, 3)
    vm = np.eye(4)
    K = np.array([[15.0, 0.0, W / 2 - 0.4], [0.0, 14.0, H / 2 + 0.25], [0.0, 0.0, 1.0]])  # px per metre
    aa = mode == "antialiased"
    ref = reference_rasterize(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["features"],
        vm, K, W, H, antialiased=aa, ortho=True,
    )  # fmt: skip
    for dtype in (torch.float64, torch.float32):
        out = [o[0] for o in _render(scene, vm[None], K[None], dtype, mode=mode, camera_model="ortho")]
        errs = _max_errors(out, ref)
        assert max(errs) < (1e-9 if dtype == torch.float64 else 1e-4), (dtype, errs)


@pytest.mark.parametrize(
    "cfg", [None, CompositeConfig(workers=2, serial_below=0, pair_budget=400, cache_pairs=0, block=8)]
)
def test_multiple_cameras_and_per_camera_features(cfg: CompositeConfig | None) -> None:
    rng = np.random.default_rng(11)
    scene = random_scene(rng, 120, 4, depth=0.0)
    eyes = [np.array([0.3, -0.2, -3.0]), np.array([2.5, 0.4, -1.5])]
    vms = np.stack([look_at_viewmat(e, np.zeros(3)) for e in eyes])
    Ks = np.stack([pinhole_K(W, H, 40.0), pinhole_K(W, H, 55.0)])
    feats = rng.uniform(0, 1, (2, scene["means"].shape[0], 4))  # [C, N, D]
    out = rasterize(
        *(_t(scene[k], torch.float64) for k in ("means", "quats", "scales", "opacities")),
        _t(feats, torch.float64), _t(vms, torch.float64), _t(Ks, torch.float64), W, H,
        near_plane=0.05, backend="torch", config=cfg,
    )  # fmt: skip
    for c in range(2):
        ref = reference_rasterize(
            scene["means"], scene["quats"], scene["scales"], scene["opacities"], feats[c],
            vms[c], Ks[c], W, H, near=0.05,
        )  # fmt: skip
        assert ref[1].max() > 0.5
        assert max(_max_errors([o[c] for o in out], ref)) < 1e-9


@pytest.mark.parametrize(
    "cfg",
    [
        CompositeConfig(block=4, round_start=8, round_max=8, chunk=1 << 10),
        CompositeConfig(block=16, round_start=64, round_max=1024),
        CompositeConfig(block=8, round_start=4, chunk=300, pair_budget=200),  # many depth slabs
        CompositeConfig(workers=3, serial_below=0, jobs_per_worker=4, chunk=1 << 12),  # threads
        CompositeConfig(workers=2, serial_below=0, pair_budget=300, round_max=16),
    ],
)
def test_results_do_not_depend_on_tuning(cfg: CompositeConfig) -> None:
    rng = np.random.default_rng(5)
    scene = random_scene(rng, 200, 3)
    vm, K = np.eye(4), pinhole_K(W, H, 40.0)
    ref = reference_rasterize(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["features"], vm, K, W, H
    )
    out = [o[0] for o in _render(scene, vm[None], K[None], torch.float64, config=cfg)]
    assert max(_max_errors(out, ref)) < 1e-9


def test_empty_and_fully_culled_scenes() -> None:
    vm, K = torch.eye(4)[None], torch.as_tensor(pinhole_K(W, H, 40.0), dtype=torch.float32)[None]
    bg = torch.tensor([[0.2, 0.4]])
    z = torch.zeros(0, 3)
    c, a, d = rasterize(
        z, torch.zeros(0, 4), z, torch.zeros(0), torch.zeros(0, 2), vm, K, W, H, backgrounds=bg
    )
    assert torch.equal(c, bg[:, None, None, :].expand(1, H, W, 2))
    assert a.abs().max() == 0 and d.abs().max() == 0
    # everything behind the camera
    means = torch.tensor([[0.0, 0.0, -2.0]])
    c, a, d = rasterize(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.ones(1),
                        torch.ones(1, 2), vm, K, W, H)  # fmt: skip
    assert c.abs().max() == 0 and a.abs().max() == 0 and d.abs().max() == 0


def test_worker_threads_give_the_same_gradients() -> None:
    rng = np.random.default_rng(8)
    scene = random_scene(rng, 300, 3)
    vm, K = torch.eye(4, dtype=torch.float64)[None], _t(pinhole_K(W, H, 40.0), torch.float64)[None]
    grads = []
    configs = (
        CompositeConfig(workers=1),
        CompositeConfig(workers=3, serial_below=0, chunk=1 << 11),
        CompositeConfig(block=8, pair_budget=500, cache_pairs=0),  # slabs re-binned in backward
    )
    for cfg in configs:
        x = [_t(scene[k], torch.float64).requires_grad_(True)
             for k in ("means", "quats", "scales", "opacities", "features")]  # fmt: skip
        c, a, d = rasterize(*x, vm, K, W, H, backend="torch", config=cfg)
        (c.square().sum() + a.sum() + 0.1 * d.sum()).backward()
        grads.append([t.grad for t in x])
    for other in grads[1:]:
        for g1, g2 in zip(grads[0], other):
            assert torch.allclose(g1, g2, rtol=1e-10, atol=1e-12)
