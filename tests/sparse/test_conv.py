"""Submanifold conv: the torch and spconv backends agree (values and gradients) with a dense reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from near_blender import NearError
from near_blender.sparse import SparseConv3d, SubMConv3d, conv_backend, resolve_backend, spconv_available
from near_blender.sparse.conv import set_conv_backend

from ._grids import random_grid

needs_spconv = pytest.mark.skipif(not spconv_available(), reason="spconv not installed")


def dense_reference(x, conv: SubMConv3d) -> torch.Tensor:
    """Dense conv3d on the scattered grid, read back at the active voxels (= submanifold conv)."""
    d = x.dense()
    w = conv.weight.permute(0, 4, 1, 2, 3)  # [out, in, kx, ky, kz]
    ref = F.conv3d(d, w, conv.bias, padding=1)
    c = x.coords.long()
    return ref[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def test_weight_layout_and_keys() -> None:
    m = SparseConv3d(5, 7)
    sd = m.state_dict()
    assert tuple(sd["conv.weight"].shape) == (7, 3, 3, 3, 5)
    assert tuple(sd["conv.bias"].shape) == (7,)


def test_kernel_orientation_reads_neighbour_at_plus_offset() -> None:
    from near_blender.sparse import SparseTensor

    x = SparseTensor.from_list([torch.tensor([[1, 1, 1], [2, 1, 1]])], [torch.tensor([[1.0], [10.0]])])
    conv = SubMConv3d(1, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 2, 1, 1, 0] = 1.0  # offset (+1, 0, 0)
    for backend in ["torch"] + (["spconv"] if spconv_available() else []):
        with conv_backend(backend):
            out = conv(x).feats[:, 0].tolist()
        assert out == [10.0, 0.0], backend


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_backend_matches_dense_conv(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = random_grid(2, 150, 8, 6, g)
    conv = SubMConv3d(6, 9)
    with conv_backend("torch"):
        out = conv(x).feats
    torch.testing.assert_close(out, dense_reference(x, conv), atol=1e-5, rtol=1e-5)


@needs_spconv
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spconv_and_torch_agree_with_gradients(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = random_grid(2, 200, 10, 16, g)
    conv = SubMConv3d(16, 24)
    grads = {}
    outs = {}
    for backend in ("torch", "spconv"):
        feats = x.feats.clone().requires_grad_(True)
        conv.zero_grad()
        with conv_backend(backend):
            assert resolve_backend(x, conv.weight) == backend
            out = conv(x.replace(feats)).feats
        (out * torch.linspace(-1, 1, out.shape[1])).pow(2).sum().backward()
        outs[backend] = out.detach()
        grads[backend] = (feats.grad, conv.weight.grad.clone(), conv.bias.grad.clone())
    torch.testing.assert_close(outs["spconv"], outs["torch"], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads["spconv"], grads["torch"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the isolated voxel (last of item 0) only sees itself: centre tap + bias
    iso = x.layout[0].stop - 1
    expect = x.feats[iso] @ conv.weight[:, 1, 1, 1, :].t() + conv.bias
    torch.testing.assert_close(outs["spconv"][iso], expect.detach(), atol=1e-5, rtol=1e-5)


@needs_spconv
def test_spconv_eval_mode_with_bias_on_cpu() -> None:
    """spconv's CPU build refuses a fused bias in eval mode; ours adds the bias itself."""
    g = torch.Generator().manual_seed(3)
    x = random_grid(1, 100, 8, 4, g)
    conv = SubMConv3d(4, 5).eval()
    with torch.no_grad(), conv_backend("spconv"):
        out = conv(x).feats
    torch.testing.assert_close(out, dense_reference(x, conv), atol=1e-5, rtol=1e-5)


def test_backend_selection_is_runtime() -> None:
    g = torch.Generator().manual_seed(4)
    x = random_grid(1, 50, 6, 3, g)
    conv = SubMConv3d(3, 3)
    conv.backend = "torch"
    assert resolve_backend(x, conv.weight, conv.backend) == "torch"
    with pytest.raises(NearError, match="Unknown sparse conv backend"):
        set_conv_backend("cuda-magic")
    with pytest.raises(NearError, match="Unknown sparse conv backend"), conv_backend("nope"):
        pass
    # float64 is not supported by spconv on CPU: auto falls back to torch, explicit spconv explains
    x64 = x.replace(x.feats.double())
    assert resolve_backend(x64, conv.weight.double(), "auto") == "torch"
    if spconv_available():
        with pytest.raises(NearError, match="spconv"):
            resolve_backend(x64, conv.weight.double(), "spconv")


def test_wrong_channel_count_is_a_clear_error() -> None:
    g = torch.Generator().manual_seed(5)
    x = random_grid(1, 20, 6, 3, g)
    with pytest.raises(NearError, match=r"expects feats \[N, 4\]"):
        SubMConv3d(4, 2)(x)
