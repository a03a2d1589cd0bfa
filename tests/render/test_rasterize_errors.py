"""Bad input to rasterize gives a NearError that names the problem, never a torch traceback."""

from __future__ import annotations

import re

import pytest
import torch

from near_blender import NearError
from near_blender.render import rasterize

W, H = 16, 12


def _args(n: int = 3, c: int = 1, d: int = 3) -> dict:
    return {
        "means": torch.tensor([[0.0, 0.0, 2.0]]).repeat(n, 1),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        "scales": torch.full((n, 3), 0.1),
        "opacities": torch.full((n,), 0.5),
        "features": torch.rand(n, d),
        "viewmats": torch.eye(4)[None].repeat(c, 1, 1),
        "Ks": torch.tensor([[[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]]]).repeat(c, 1, 1),
        "width": W,
        "height": H,
    }


def test_valid_call_works() -> None:
    c, a, d = rasterize(**_args(), backend="torch")
    assert c.shape == (1, H, W, 3) and a.max() > 0.4
    assert torch.allclose(d[a > 0], torch.tensor(2.0))  # expected depth of a single plane


@pytest.mark.parametrize(
    "change, words",
    [
        ({"means": torch.zeros(3, 2)}, "means must be [N, 3]"),
        ({"quats": torch.zeros(3, 3)}, "quats must have shape [3, 4]"),
        ({"scales": torch.zeros(2, 3)}, "scales must have shape [3, 3]"),
        ({"opacities": torch.zeros(3, 1)}, "opacities must have shape [3]"),
        ({"features": torch.zeros(4, 3)}, "features must be [N, D] or [C, N, D]"),
        ({"features": torch.zeros(3, 0)}, "D >= 1"),
        ({"viewmats": torch.eye(3)[None]}, "viewmats must be [C, 4, 4]"),
        ({"Ks": torch.eye(3)[None].repeat(2, 1, 1)}, "Ks must be [C, 3, 3]"),
        ({"Ks": torch.zeros(1, 3, 3)}, "positive focal lengths"),
        ({"width": 0}, "positive integers"),
        ({"height": 7.5}, "positive integers"),
        ({"means": torch.tensor([[0.0, float("nan"), 2.0]] * 3)}, "means contains 3 NaN/Inf"),
        ({"scales": torch.full((3, 3), float("inf"))}, "scales contains 9 NaN/Inf"),
        ({"viewmats": torch.full((1, 4, 4), float("nan"))}, "viewmats contains"),
        ({"quats": torch.zeros(3, 4)}, "non-zero length"),
        ({"means": torch.zeros(3, 3, dtype=torch.int64)}, "float32 or float64"),
        ({"means": torch.zeros(3, 3, dtype=torch.float16)}, "float32 or float64"),
        ({"features": [[1.0, 2.0, 3.0]] * 3}, "features must be a torch.Tensor"),
    ],
)
def test_bad_input_is_a_near_error(change: dict, words: str) -> None:
    with pytest.raises(NearError, match=re.escape(words)):
        rasterize(**(_args() | change), backend="torch")


def test_bad_options() -> None:
    with pytest.raises(NearError, match="mode"):
        rasterize(**_args(), mode="fancy")
    with pytest.raises(NearError, match="camera model"):
        rasterize(**_args(), camera_model="fisheye")
    with pytest.raises(NearError, match="backend"):
        rasterize(**_args(), backend="vulkan")
    with pytest.raises(NearError, match="near < far"):
        rasterize(**_args(), near_plane=2.0, far_plane=1.0)
    with pytest.raises(NearError, match="backgrounds must be"):
        rasterize(**_args(), backgrounds=torch.zeros(1, 2))


def test_backgrounds_may_be_one_colour_for_all_cameras() -> None:
    c, a, _ = rasterize(**_args(c=2), backgrounds=torch.tensor([1.0, 0.0, 0.0]), backend="torch")
    corner = c[:, 0, 0]
    assert torch.allclose(corner, torch.tensor([1.0, 0.0, 0.0]).expand(2, 3), atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")
def test_gsplat_backend_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(NearError, match="backend='gsplat' needs CUDA tensors"):
        rasterize(**_args(), backend="gsplat")


def test_auto_backend_on_cpu_uses_torch() -> None:
    args = _args()
    out_auto = rasterize(**args)
    out_torch = rasterize(**args, backend="torch")
    for x, y in zip(out_auto, out_torch):
        assert torch.equal(x, y)


def test_mixed_devices_are_rejected() -> None:
    args = _args()
    args["Ks"] = args["Ks"].to("meta")
    with pytest.raises(NearError, match="put all inputs on one device"):
        rasterize(**args)


def test_auto_falls_back_to_torch_when_gsplat_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA, 'auto' tries gsplat; if its kernels fail it warns once and keeps using torch."""
    import importlib

    gs = importlib.import_module("near_blender.render._raster_gsplat")
    rz = importlib.import_module("near_blender.render.rasterize")  # the module, not the function

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise NearError("gsplat failed (RuntimeError: no kernel image).")

    monkeypatch.setattr(gs, "_FAILED", [])
    monkeypatch.setattr(gs, "rasterize_gsplat", broken)
    monkeypatch.setattr(gs, "_static_status", lambda: None)
    monkeypatch.setattr(rz, "_pick_backend", lambda backend, means: "torch" if gs._FAILED else "gsplat")
    args = _args()
    with pytest.warns(RuntimeWarning, match="Falling back to the torch backend"):
        out = rasterize(**args)
    ref = rasterize(**args, backend="torch")
    assert all(torch.equal(x, y) for x, y in zip(out, ref))
    rasterize(**args)  # no second attempt
    assert len(calls) == 1 and gs.gsplat_status() is not None
    monkeypatch.setattr(rz, "_pick_backend", lambda backend, means: "gsplat")
    with pytest.raises(NearError, match="no kernel image"):  # an explicit gsplat request raises
        rasterize(**args, backend="gsplat")
