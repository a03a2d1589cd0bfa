"""The published NeAR renderer's quirks behind ``compat="published"`` (issue 17).

A tiny checkpoint written in the published layout (a JSON without a ``compat`` key, as the
published files are) must decode exactly as the authors' renderer does: every attribute group is
read from channel 0 of the concatenated head outputs, and the camera centre is the translation of
the inverted world-to-camera matrix. The expected values are computed here from the raw weights,
with the indices written out by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from near_blender.models import load_model
from near_blender.models.lighting_decoder import LightingAwareDecoder
from near_blender.render.camera import look_at

K, FD, C, RES = 2, 3, 32, 8  # Gaussians per voxel, colour-feature width, model width, grid


def _published_args() -> dict:
    args = LightingAwareDecoder.paper_config(
        resolution=RES,
        model_channels=C,
        latent_channels=C,
        cond_channels=C,
        num_blocks=1,
        num_register_tokens=2,
        num_heads=2,
        num_head_channels=16,
        color_feature_dim=FD,
    )
    args["representation_config"]["num_gaussians"] = K
    del args["compat"]  # the published JSONs never carry it
    return args


def _write_published(folder: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = LightingAwareDecoder(**_published_args())
    sd = {k: torch.randn_like(v) * 0.5 for k, v in model.state_dict().items() if k != "offset_perturbation"}
    sd["offset_perturbation"] = model.state_dict()["offset_perturbation"]
    cfg, weights = folder / "renderer.json", folder / "renderer.safetensors"
    cfg.write_text(json.dumps({"name": "SLatGaussianRenderer", "args": _published_args()}))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(weights))
    return cfg, weights, sd


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 4, 4], [0, 7, 0, 5]], dtype=torch.int32)
    h = torch.randn(3, C, generator=g)
    regs = torch.randn(1, 2, C, generator=g)
    light = torch.randn(1, 5, C, generator=g)
    vm = torch.tensor(look_at((1.3, -1.7, 0.9), (0.05, 0.0, -0.02)), dtype=torch.float32)[None]
    return h, coords, regs, light, vm


def _mlp(sd: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    hid = F.gelu(x @ sd[f"{name}.0.weight"].T + sd[f"{name}.0.bias"])
    return hid @ sd[f"{name}.2.weight"].T + sd[f"{name}.2.bias"]


def _lin(sd: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _capture_head_inputs(model: LightingAwareDecoder) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    model.gs_out_layer.register_forward_hook(lambda m, a, o: seen.__setitem__("intrinsic", a[0]))
    model.rgb_out_layer.register_forward_hook(lambda m, a, o: seen.__setitem__("lighting", a[0]))
    return seen


def test_published_checkpoint_reads_heads_as_the_authors_renderer(tmp_path: Path) -> None:
    cfg, weights, sd = _write_published(tmp_path)
    model = load_model(cfg, weights)
    assert model.compat == "published"
    seen = _capture_head_inputs(model)
    h, coords, regs, light, vm = _inputs()
    with torch.no_grad():
        g = model(h, regs, light, vm, coords=coords)
    # the four raw head outputs, concatenated in the published order
    cat = torch.cat(
        [
            _mlp(
                sd, "gs_out_layer", seen["intrinsic"]
            ),  # 14K: xyz 3K, colour 3K, scale 3K, rot 4K, opacity K
            _mlp(sd, "pbr_out_layer", seen["intrinsic"]),  # 3K
            _lin(sd, "scale_out_layer", seen["lighting"]),  # 3K
            _lin(sd, "rgb_out_layer", seen["lighting"]),  # (FD + 3) K
        ],
        dim=1,
    )
    n = cat.shape[0]
    rough = torch.empty(n, K)
    metal = torch.empty(n, K)
    pbr1 = torch.empty(n, K)
    shadow = torch.empty(n, K)
    hdri1 = torch.empty(n, K)
    feat = torch.empty(n, K, FD)
    scale_view = torch.empty(n, K, 3)
    for v in range(n):
        for k in range(K):
            rough[v, k] = cat[v, k]  # every group restarts at channel 0 of the concatenation
            metal[v, k] = cat[v, K + k]
            pbr1[v, k] = cat[v, 2 * K + k]
            shadow[v, k] = cat[v, FD * K + k]
            hdri1[v, k] = cat[v, (FD + 1) * K + k]
            for a in range(3):
                scale_view[v, k, a] = cat[v, 3 * k + a]
            for f in range(FD):
                feat[v, k, f] = cat[v, FD * k + f]
    torch.testing.assert_close(g.roughness, torch.sigmoid(rough).reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.metallic, torch.sigmoid(metal).reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.pbr_extra[:, 0], torch.sigmoid(pbr1).reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.shadow, torch.sigmoid(shadow).reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.light_extra[:, 0], torch.sigmoid(hdri1).reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.color_feature, feat.reshape(-1, FD), atol=1e-6, rtol=1e-5)
    # light-specific scale: softplus(raw + softplus^-1(0.004)), 3D filter 9e-4
    bias = 0.004 + math.log(-math.expm1(-0.004))
    want = torch.sqrt(F.softplus(scale_view + bias).square() + 9e-4**2).reshape(-1, 3)
    torch.testing.assert_close(g.light_scales, want, atol=1e-7, rtol=1e-5)
    # the Gaussian group itself is where both layouts agree: opacity = tanh(raw + 2 atanh(0.1))
    opacity = torch.stack([cat[:, 13 * K + k] for k in range(K)], 1)
    torch.testing.assert_close(g.opacities, torch.tanh(opacity + 2 * math.atanh(0.1)).reshape(-1))


def test_near_layout_reads_each_head_from_its_own_channels(tmp_path: Path) -> None:
    cfg, weights, sd = _write_published(tmp_path)
    model = load_model(cfg, weights, compat="near")
    seen = _capture_head_inputs(model)
    h, coords, regs, light, vm = _inputs()
    with torch.no_grad():
        g = model(h, regs, light, vm, coords=coords)
    pbr = _mlp(sd, "pbr_out_layer", seen["intrinsic"])
    rgb = _lin(sd, "rgb_out_layer", seen["lighting"])
    torch.testing.assert_close(g.roughness, torch.sigmoid(pbr[:, :K]).reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.shadow, torch.sigmoid(rgb[:, FD * K : (FD + 1) * K]).reshape(-1))
    published = load_model(cfg, weights)
    with torch.no_grad():
        gp = published(h, regs, light, vm, coords=coords)
    assert float((gp.roughness - g.roughness).abs().max()) > 0.05


def test_published_camera_centre_is_the_inverted_matrix(tmp_path: Path) -> None:
    cfg, weights, _ = _write_published(tmp_path)
    model = load_model(cfg, weights)
    h, coords, regs, light, vm = _inputs()
    # a camera matrix as it comes out of float32 arithmetic: a rotation that is orthonormal only
    # to ~1e-4, where -R^T t and the inverse disagree in the 4th decimal
    vm = vm.clone()
    vm[0, :3, :3] = vm[0, :3, :3] * torch.tensor([1.0, 1.0 + 2e-4, 1.0 - 1e-4])[:, None]
    cam = torch.linalg.inv(vm)[0, :3, 3]
    p = (coords[:, 1:].float() + 0.5) / RES  # the published [0, 1]^3 grid frame
    ray = p - cam
    dist = ray.norm(dim=1, keepdim=True)
    want = model.view_embedding(ray / dist, dist)
    asset = model.prepare_asset(h, regs, coords=coords, batch_size=1)
    with torch.no_grad():
        got, _ = model.lighting_features(asset, model.prepare_lighting(light), vm)
        torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)
        near = load_model(cfg, weights, compat="near")
        e_near, _ = near.lighting_features(
            near.prepare_asset(h, regs, coords=coords, batch_size=1), near.prepare_lighting(light), vm
        )
    assert float((e_near - got).abs().max()) > 1e-3


def test_our_configs_record_their_layout(tmp_path: Path) -> None:
    from near_blender.models import save_pretrained

    model = LightingAwareDecoder(**LightingAwareDecoder.tiny_config())
    cfg, _ = save_pretrained(model, tmp_path, "renderer")
    assert json.loads(cfg.read_text())["args"]["compat"] == "near"
    shipped = Path(__file__).resolve().parents[2] / "near_blender/weights/near-default/ckpts/renderer.json"
    assert json.loads(shipped.read_text())["args"]["compat"] == "near"


def test_unknown_compat_is_a_clear_error() -> None:
    from near_blender import NearError

    with pytest.raises(NearError, match="published"):
        LightingAwareDecoder(**LightingAwareDecoder.tiny_config(compat="authors"))
