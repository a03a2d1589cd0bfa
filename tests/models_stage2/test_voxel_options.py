"""This project's decoder options for small models: normals from the voxel shell
(``representation_config.normal_source = "voxels"``) or from the input SLAT's normal channels
(``"features"`` with ``feature_normals``), the base-colour skip (``base_color_skip``), and the
fine-tuning start that adds them to a trained model."""

from __future__ import annotations

import pytest
import torch

from near_blender import NearError
from near_blender.models.gaussian_head import SH_C0
from near_blender.models.view_embedding import camera_centres
from near_blender.pipeline import NearPipeline
from near_blender.sparse import SparseTensor
from near_blender.sparse.surface_normals import voxel_surface_normals
from near_blender.train.stage2 import Stage2Config, build_model, init_weights, read_init_source
from tests.models_stage2._stage2_helpers import camera, sphere_slat, tiny_stack

SKIP = {"channels": [3, 4, 5], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.1, 0.25]}


def _env(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 9, 32, 64, generator=torch.Generator().manual_seed(seed))


def _colour_slat(seed: int = 0) -> SparseTensor:
    """The sphere SLAT with channels 3-5 holding standardized colours whose raw value varies."""
    s = sphere_slat(0.25, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    feats = s.feats.clone()
    feats[:, 3:6] = torch.randn(len(feats), 3, generator=g)
    return SparseTensor(feats, s.coords, batch_size=1)


def test_voxel_normals_replace_the_shortest_axis_and_face_the_camera() -> None:
    model = tiny_stack(0, renderer={"representation_config": {"normal_source": "voxels"}})
    plain = tiny_stack(0)
    slat = sphere_slat(0.25)
    vm, K = camera((1.2, -0.7, 0.5), 24, 24)
    with torch.no_grad():
        g = model.gaussians(model.encode_asset(slat), model.encode_lighting(_env()), vm[None])
        g0 = plain.gaussians(plain.encode_asset(slat), plain.encode_lighting(_env()), vm[None])
    Kg = len(g) // len(slat)
    want = voxel_surface_normals(slat.coords.long(), 64, 2.5).repeat_interleave(Kg, 0)
    assert torch.allclose((g.normals * want).sum(-1).abs(), torch.ones(len(g)), atol=1e-5)
    # oriented towards the camera (in the view-embedding frame, shifted by 0.5 like the published one)
    to_cam = camera_centres(vm[None])[0] - (g.means + 0.5)
    assert bool(((g.normals * to_cam).sum(-1) >= 0).all())
    # the sphere's normals are radial, so about half of the voxels face away: their sign flips
    radial = torch.nn.functional.normalize(g.means, dim=-1)
    assert float((g.normals * radial).sum(-1).abs().mean()) > 0.97
    # everything but the normals is the published decoding
    assert torch.equal(g.base_color, g0.base_color) and torch.equal(g.means, g0.means)
    assert float((g0.normals * radial).sum(-1).abs().mean()) < 0.9  # random weights: unrelated axes


NORMALS = {"channels": [3, 4, 5], "mean": [0.1, -0.2, 0.05], "std": [0.5, 0.6, 0.4]}


def test_feature_normals_are_the_slat_normals_unflipped_with_the_shell_where_they_are_short() -> None:
    model = tiny_stack(0, renderer={"representation_config": {"normal_source": "features"},
                                    "feature_normals": NORMALS})  # fmt: skip
    s = sphere_slat(0.25)
    centres = (s.coords[:, 1:].float() + 0.5) / 64 - 0.5
    radial = torch.nn.functional.normalize(centres, dim=-1)
    length = torch.ones(len(s.feats), 1)
    short = torch.arange(len(s.feats)) % 5 == 0  # a voxel holding surfaces that face different ways
    length[short] = 0.3
    feats = s.feats.clone()
    feats[:, 3:6] = (radial * length - torch.tensor(NORMALS["mean"])) / torch.tensor(NORMALS["std"])
    slat = SparseTensor(feats, s.coords, batch_size=1)
    vm, K = camera((1.2, -0.7, 0.5), 24, 24)
    with torch.no_grad():
        g = model.gaussians(model.encode_asset(slat), model.encode_lighting(_env()), vm[None])
    Kg = len(g) // len(slat)
    long_g, short_g = (~short).repeat_interleave(Kg), short.repeat_interleave(Kg)
    # outward, as the SLAT says, also on the far side of the sphere (no flip towards the camera)
    assert torch.allclose(g.normals[long_g], radial.repeat_interleave(Kg, 0)[long_g], atol=1e-5)
    to_cam = camera_centres(vm[None])[0] - (g.means + 0.5)
    assert float(((g.normals[long_g] * to_cam[long_g]).sum(-1) < 0).float().mean()) > 0.3
    # the short ones take the voxel shell's normal, turned to the camera
    shell = voxel_surface_normals(slat.coords.long(), 64, 2.5).repeat_interleave(Kg, 0)[short_g]
    assert torch.allclose(
        (g.normals[short_g] * shell).sum(-1).abs(), torch.ones(int(short_g.sum())), atol=1e-5
    )
    assert bool(((g.normals[short_g] * to_cam[short_g]).sum(-1) >= 0).all())
    with pytest.raises(NearError, match="feature_normals"):
        tiny_stack(0, renderer={"representation_config": {"normal_source": "features"}})


def test_stage2_training_fills_in_the_normal_channels_from_the_slat_statistics() -> None:
    norm = {"mean": [float(i) for i in range(11)], "std": [1.0 + i for i in range(11)]}
    cfg = Stage2Config(model_overrides={"renderer": {"representation_config": {"normal_source": "features"}}},
                       use_bc_slat=True, base_color_skip=True)  # fmt: skip
    renderer = build_model(cfg, norm).renderer
    assert renderer.feature_normals == {
        "channels": [3, 4, 5],
        "mean": [3.0, 4.0, 5.0],
        "std": [4.0, 5.0, 6.0],
    }
    assert renderer.base_color_skip["channels"] == [8, 9, 10]
    assert renderer.base_color_skip["std"] == [9.0, 10.0, 11.0]


def test_base_colour_skip_starts_from_the_voxel_colour() -> None:
    model = tiny_stack(1, renderer={"base_color_skip": SKIP})
    Kg = model.renderer.layout.num_gaussians
    slat = _colour_slat()
    vm, K = camera((1.0, 1.0, 0.6), 24, 24)
    raw_colour = (slat.feats[:, 3:6] * torch.tensor(SKIP["std"]) + torch.tensor(SKIP["mean"])).clamp(0, 1)
    with torch.no_grad():
        model.renderer.gs_out_layer[-1].weight[3 * Kg : 6 * Kg].zero_()
        model.renderer.gs_out_layer[-1].bias[3 * Kg : 6 * Kg].zero_()
        asset, light = model.encode_asset(slat), model.encode_lighting(_env(1))
        g = model.gaussians(asset, light, vm[None])
        full = model(slat, _env(1), vm[None], K[None], 24, 24)
        cached = model.decode_view(asset, light, vm[None], K[None], 24, 24)
    assert torch.allclose(g.base_color, raw_colour.repeat_interleave(Kg, 0), atol=1e-6)
    assert all(torch.equal(full[k], cached[k]) for k in full)
    # with a residual the colour moves by SH_C0 * logit, around the voxel colour
    with torch.no_grad():
        model.renderer.gs_out_layer[-1].bias[3 * Kg : 6 * Kg].fill_(0.2)
        g2 = model.gaussians(model.encode_asset(slat), light, vm[None])
    want = (raw_colour.repeat_interleave(Kg, 0) + SH_C0 * 0.2).clamp_min(0)
    assert torch.allclose(g2.base_color, want, atol=1e-6)


def test_base_colour_skip_errors() -> None:
    model = tiny_stack(0, renderer={"base_color_skip": SKIP})
    slat = sphere_slat(0.25)
    h, reg = model.decoder(slat)
    with pytest.raises(NearError, match="slat_feats"):
        model.renderer.prepare_asset(h, reg)
    with pytest.raises(NearError, match="channels"):
        model.renderer.prepare_asset(h, reg, slat_feats=slat.feats[:, :4])
    with pytest.raises(NearError, match="base_color_skip must be"):
        tiny_stack(0, renderer={"base_color_skip": {"channels": [1, 2, 3]}})
    with pytest.raises(NearError, match="normal_source"):
        tiny_stack(0, renderer={"representation_config": {"normal_source": "magic"}})


def test_init_from_zeroes_the_base_colour_rows_when_adding_the_skip(tmp_path) -> None:
    src = tiny_stack(2)
    NearPipeline(models=src.stage2_models(), args={"stage2": {"slat_normalization": {}}}).save_pretrained(
        tmp_path / "model"
    )
    model = tiny_stack(4, renderer={"base_color_skip": SKIP})
    init_weights(model, read_init_source(str(tmp_path / "model")), "test")
    Kg = model.renderer.layout.num_gaussians
    last = model.renderer.gs_out_layer[-1]
    src_last = src.renderer.gs_out_layer[-1]
    assert torch.all(last.weight[3 * Kg : 6 * Kg] == 0) and torch.all(last.bias[3 * Kg : 6 * Kg] == 0)
    assert torch.equal(last.weight[: 3 * Kg], src_last.weight[: 3 * Kg])
    assert torch.equal(last.weight[6 * Kg :], src_last.weight[6 * Kg :])
    assert float(src_last.weight.detach()[3 * Kg : 6 * Kg].abs().sum()) > 0
