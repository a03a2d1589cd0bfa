"""The decoder benchmark's analytic FLOP formulas against torch's FlopCounterMode, and its asset."""

from __future__ import annotations

import pytest
import torch

from near_blender.bench.decoder import (
    counted_flops,
    iad_flops,
    lad_asset_flops,
    lad_lighting_flops,
    lad_view_flops,
    radiance_flops,
    shell_voxels,
)
from near_blender.models.intrinsic_decoder import IntrinsicAwareDecoder
from near_blender.sparse import window_partition
from tests.models_stage2._stage2_helpers import camera, sphere_slat, tiny_stack


@pytest.mark.parametrize("mode", ["read", "aggregate"])
def test_analytic_flops_match_the_flop_counter(mode: str) -> None:
    model = tiny_stack(decoder={"register_mode": mode}).requires_grad_(False)
    slat = sphere_slat(0.2)
    env = torch.randn(1, 9, 64, 64)
    vm, _ = camera((1.0, 0.8, 0.6), 16, 16)
    N, R = len(slat), model.decoder.num_register_tokens
    L = model.hdri_encoder.num_tokens
    with torch.no_grad():
        # Swin windows are padded to common lengths by the sdpa backend, so executed FLOPs exceed
        # the useful ones there; with full attention the two agree exactly.
        assert counted_flops(lambda: model.decoder(slat)) >= iad_flops(model.decoder, slat)
        full = IntrinsicAwareDecoder(
            **IntrinsicAwareDecoder.tiny_config(attn_mode="full", register_mode=mode)
        )
        assert counted_flops(lambda: full(slat), full) == iad_flops(full, slat)
        h, regs = model.decoder(slat)
        assert counted_flops(lambda: model.renderer.prepare_asset(h, regs)) == lad_asset_flops(
            model.renderer, N, R
        )
        tokens = model.hdri_encoder(env)
        assert counted_flops(lambda: model.renderer.prepare_lighting(tokens)) == lad_lighting_flops(
            model.renderer, L
        )
        asset, light = model.encode_asset(slat), model.encode_lighting(env)
        assert counted_flops(lambda: model.gaussians(asset, light, vm[None])) == lad_view_flops(
            model.renderer, N, R, L
        )
        feats, normals = torch.randn(100, 8), torch.randn(100, 3)
        assert counted_flops(lambda: model.neural_basis(feats, normals)) == radiance_flops(
            model.neural_basis, 100
        )


def test_benchmark_asset_size() -> None:
    c = shell_voxels(20_000)
    assert 19_000 <= len(c) <= 21_000
    assert c.min() >= 0 and c.max() <= 63
    assert len(torch.unique(c, dim=0)) == len(c)


def test_swin_pair_count_is_the_number_of_same_window_pairs() -> None:
    slat = sphere_slat(0.3)
    c = slat.coords[:, 1:].long()
    for shift in (0, 4):
        _, _, lens = window_partition(slat, 8, shift)
        w = torch.div(c + shift, 8, rounding_mode="floor")
        brute = int((w[:, None] == w[None]).all(-1).sum())
        assert sum(n * n for n in lens) == brute
