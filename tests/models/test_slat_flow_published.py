"""The SLAT flow runs published TRELLIS weights as TRELLIS ran them (issue 17).

A tiny checkpoint written in the published layout (a JSON without ``compat``, as TRELLIS's files
are) must pool its IO stage the way TRELLIS does -- ``scatter_reduce(..., "mean")`` into a zero
tensor with ``include_self=True``, i.e. the children's sum over n + 1 -- while our own checkpoints
(``compat="near"``) keep the true mean. The expected pooled features are computed here from the
fine voxels with torch's ``scatter_reduce``, independently of :mod:`near_blender.sparse`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from near_blender import NearError
from near_blender.models import load_model, save_pretrained
from near_blender.models.slat_flow import SLatFlowModel
from near_blender.sparse import SparseTensor

from ._helpers import TINY, sparse_input


def _published_args() -> dict:
    args = SLatFlowModel.paper_config(**TINY)
    del args["compat"]  # TRELLIS's JSONs never carry it
    return args


def _write_published(folder: Path) -> tuple[Path, Path]:
    model = SLatFlowModel(**_published_args())
    g = torch.Generator().manual_seed(11)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.3).contiguous() for k, v in model.state_dict().items()}
    cfg, weights = folder / "denoiser.json", folder / "denoiser.safetensors"
    cfg.write_text(json.dumps({"name": "SLatFlowModel", "args": _published_args()}))
    save_file(sd, str(weights))
    return cfg, weights


def _inputs() -> tuple[SparseTensor, torch.Tensor, torch.Tensor]:
    x = sparse_input(seed=2, channels=8)
    return (
        x,
        torch.tensor([250.0, 900.0]),
        torch.randn(2, 4, TINY["cond_channels"], generator=torch.Generator().manual_seed(3)),
    )


def _trellis_pool(fine: SparseTensor, coarse_coords: torch.Tensor) -> torch.Tensor:
    """TRELLIS's pooling rule, written out: mean-scatter the fine features into a zero tensor with
    ``include_self=True`` (the zero counts as one more element)."""
    slot = {tuple(c.tolist()): i for i, c in enumerate(coarse_coords)}
    parent = fine.coords.clone()
    parent[:, 1:] //= 2
    index = torch.tensor([slot[tuple(p.tolist())] for p in parent])
    zeros = torch.zeros(len(coarse_coords), fine.feats.shape[1])
    return zeros.scatter_reduce(
        0, index[:, None].expand_as(fine.feats), fine.feats, reduce="mean", include_self=True
    )


def _capture_pool(model: SLatFlowModel) -> dict[str, SparseTensor]:
    seen: dict[str, SparseTensor] = {}
    pool = model.input_blocks[-1].resample

    def hook(_module: torch.nn.Module, args: tuple, out: SparseTensor) -> None:
        seen["fine"], seen["coarse"] = args[0], out

    pool.register_forward_hook(hook)
    return seen


def test_published_checkpoint_pools_like_trellis(tmp_path: Path) -> None:
    cfg, weights = _write_published(tmp_path)
    model = load_model(cfg, weights)
    assert model.compat == "published"
    seen = _capture_pool(model)
    with torch.no_grad():
        out = model(*_inputs()).feats
    fine, coarse = seen["fine"], seen["coarse"]
    assert len(coarse) < len(fine)  # the test input really has voxels with several children
    expected = _trellis_pool(fine, coarse.coords)
    torch.testing.assert_close(coarse.feats, expected, atol=1e-6, rtol=1e-6)
    # the input has lone children (pooled to half their value) and parents with several
    parents = torch.cat([fine.coords[:, :1], fine.coords[:, 1:] // 2], dim=1)
    children = torch.bincount(torch.unique(parents, dim=0, return_inverse=True)[1])
    assert (children == 1).any() and (children > 1).any()

    near = load_model(cfg, weights, compat="near")
    with torch.no_grad():
        out_near = near(*_inputs()).feats
    assert float((out - out_near).abs().max()) > 1e-3


def test_published_pooling_differs_from_the_true_mean(tmp_path: Path) -> None:
    """The reference itself: the true mean (what compat="near" computes) is not TRELLIS's value."""
    cfg, weights = _write_published(tmp_path)
    near = load_model(cfg, weights, compat="near")
    seen = _capture_pool(near)
    with torch.no_grad():
        near(*_inputs())
    fine, coarse = seen["fine"], seen["coarse"]
    trellis = _trellis_pool(fine, coarse.coords)
    assert float((coarse.feats - trellis).abs().max()) > 1e-2


def test_our_checkpoints_record_their_mode_and_round_trip(tmp_path: Path) -> None:
    model = SLatFlowModel(**SLatFlowModel.tiny_config(**TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cfg, weights = save_pretrained(model, tmp_path, "flow")
    assert json.loads(cfg.read_text())["args"]["compat"] == "near"
    again = load_model(cfg, weights)
    assert again.compat == "near"
    with torch.no_grad():
        torch.testing.assert_close(again(*_inputs()).feats, model.eval()(*_inputs()).feats, atol=0, rtol=0)


def test_paper_config_is_the_published_mode_and_unknown_modes_are_refused() -> None:
    assert SLatFlowModel.paper_config()["compat"] == "published"
    with pytest.raises(NearError, match="compat"):
        SLatFlowModel(**SLatFlowModel.tiny_config(**TINY, compat="trellis"))
