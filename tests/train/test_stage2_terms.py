"""The stage-2 trainer's extra terms, against hand-computed values on tiny tensors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from near_blender import NearError
from near_blender.sparse import SparseTensor
from near_blender.train.stage2 import voxel_base_color_l1


def _slat(bc: list[list[float]]) -> tuple[SparseTensor, dict]:
    """Two voxels, 16 channels: 8 LH channels, then the base-colour SLAT (colour at 8-10)."""
    feats = torch.zeros(2, 16)
    norm = {"mean": [0.0] * 16, "std": [1.0] * 16}
    norm["mean"][8:11], norm["std"][8:11] = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    feats[:, 8:11] = (torch.tensor(bc) - 0.5) / 0.25  # standardized as the trainer feeds them
    coords = torch.tensor([[0, 10, 20, 30], [0, 11, 20, 30]], dtype=torch.int32)
    return SparseTensor(feats=feats, coords=coords), norm


def test_voxel_base_color_l1_hand_computed() -> None:
    slat, norm = _slat([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]])
    centres = (slat.coords[:, 1:].float() + 0.5) / 64 - 0.5
    means = centres.repeat_interleave(2, dim=0) + 0.005  # K = 2 Gaussians per voxel, inside it
    base = torch.tensor([[0.2, 0.4, 0.6], [0.3, 0.4, 0.6], [1.0, 0.0, 0.5], [0.8, 0.2, 0.5]])
    g = SimpleNamespace(means=means, base_color=base)
    # errors: voxel 0: 0 and 0.1; voxel 1: 0 and 0.2 + 0.2 -> sum 0.5 over 12 numbers
    assert float(voxel_base_color_l1(g, slat, norm)) == pytest.approx(0.5 / 12, abs=1e-6)


def test_voxel_base_color_l1_refuses_mispaired_or_missing_inputs() -> None:
    slat, norm = _slat([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]])
    centres = (slat.coords[:, 1:].float() + 0.5) / 64 - 0.5
    swapped = SimpleNamespace(
        means=centres.flip(0).repeat_interleave(2, dim=0) + 0.02, base_color=torch.zeros(4, 3)
    )
    with pytest.raises(NearError, match="voxel order"):
        voxel_base_color_l1(swapped, slat, norm)
    lh_only = SparseTensor(feats=slat.feats[:, :8], coords=slat.coords)
    with pytest.raises(NearError, match="use_bc_slat"):
        voxel_base_color_l1(SimpleNamespace(means=centres, base_color=torch.zeros(2, 3)), lh_only, norm)


def test_normal_cosine_loss_hand_computed() -> None:
    from near_blender.train.stage2 import normal_cosine_loss

    gt = torch.zeros(1, 1, 3, 3)
    gt[..., 2] = 0.5  # premultiplied +Z normals (normalized inside)
    pred = torch.tensor([[[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]]])
    alpha = torch.tensor([[[[1.0], [1.0], [0.2]]]])  # the third pixel is not covered: ignored
    # 1 - cos: 0 (same) and 1 (perpendicular) over two covered pixels
    assert float(normal_cosine_loss(pred, gt, alpha)) == pytest.approx(0.5, abs=1e-6)
    assert float(normal_cosine_loss(pred, gt, torch.zeros_like(alpha))) == 0.0
