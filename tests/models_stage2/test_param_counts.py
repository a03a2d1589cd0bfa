"""Paper-size parameter counts, built on the meta device (no memory, no init cost)."""

from __future__ import annotations

import pytest
import torch

from near_blender.models.lighting_decoder import LightingAwareDecoder
from near_blender.models.lighting_tokenizer import LightingTokenizer
from near_blender.models.param_count import build_on_meta, count_parameters
from near_blender.models.radiance_mlp import RadianceMLP

# Paper table 2: LAD parameters with 1 / 3 / 6 / 9 blocks.
TABLE2 = {1: 12.65e6, 3: 31.55e6, 6: 59.8e6, 9: 88.23e6}
BLOCK_768 = 9_447_168
NON_BLOCK_768 = 3_205_088


def _lad(num_blocks: int) -> LightingAwareDecoder:
    return build_on_meta(LightingAwareDecoder, LightingAwareDecoder.paper_config(num_blocks=num_blocks))


def test_lad_block_has_exactly_the_published_count() -> None:
    lad = _lad(1)
    assert count_parameters(lad.blocks[0]) == BLOCK_768
    assert lad.offset_perturbation.device.type == "meta"  # nothing was allocated


@pytest.mark.parametrize("num_blocks", sorted(TABLE2))
def test_lad_totals_match_table2(num_blocks: int) -> None:
    lad = _lad(num_blocks)
    total = count_parameters(lad)
    blocks = count_parameters(lad.blocks)
    assert blocks == num_blocks * BLOCK_768
    assert total - blocks == NON_BLOCK_768
    assert abs(total - TABLE2[num_blocks]) / TABLE2[num_blocks] < 0.02, total


def test_lad_non_block_parts_breakdown() -> None:
    lad = _lad(6)
    parts = {
        "input_layer": 768 * 768 + 768,
        "ob_views_encoder": 75 * 768 + 768,  # 3 + 3 * 2 * 12 = 75 encoded channels
        "ob_views_norm": 768,
        "ob_dists_encoder": 25 * 768 + 768,  # 1 + 2 * 12 = 25
        "ob_dists_norm": 768,
        "gs_out_layer": (768 * 768 + 768) + (768 * 14 * 32 + 14 * 32),
        "pbr_out_layer": (768 * 768 + 768) + (768 * 3 * 32 + 3 * 32),
        "scale_out_layer": 768 * 3 * 32 + 3 * 32,
        "rgb_out_layer": 768 * 35 * 32 + 35 * 32,
    }
    for name, n in parts.items():
        assert count_parameters(getattr(lad, name)) == n, name
    assert sum(parts.values()) == NON_BLOCK_768


def test_lad_paper_colour_feature_48_changes_only_the_rgb_head() -> None:
    a, b = (
        _lad(6),
        build_on_meta(LightingAwareDecoder, LightingAwareDecoder.paper_config(color_feature_dim=48)),
    )
    assert count_parameters(b) - count_parameters(a) == 16 * 32 * 769


def test_tokenizer_paper_counts() -> None:
    tok = build_on_meta(LightingTokenizer, LightingTokenizer.paper_config())
    trunk = sum(count_parameters(m) for m in (tok.stage1, tok.stage2, tok.stage3, tok.stage4))  # ConvNeXt
    total = count_parameters(tok)
    assert abs(trunk - 27.8e6) / 27.8e6 < 0.02, trunk  # ConvNeXt-Tiny features, 6-channel stem
    assert trunk == 27_823_200
    assert abs(total - 36.8e6) / 36.8e6 < 0.01, total  # measured 36,810,384
    # The two transformer layers share one set of weights but the state dict stores both copies.
    layer = count_parameters(tok.transformer_encoder.layers[0])
    assert layer == 7_084_032
    stored = sum(t.numel() for t in tok.state_dict().values())  # what a checkpoint holds
    assert stored == total + layer + 8  # + the second copy + dir_encoder.freq_bands


def test_radiance_mlp_paper_count() -> None:
    mlp = RadianceMLP(**RadianceMLP.paper_config())
    n_in = 32 + 3 * (2 * 6 + 1)
    assert count_parameters(mlp) == (n_in * 64 + 64) + (64 * 64 + 64) + (64 * 5 + 5) == 9093


def test_build_on_meta_allocates_nothing() -> None:
    lad = _lad(9)
    assert all(p.device == torch.device("meta") for p in lad.parameters())


@pytest.mark.parametrize("cls", [LightingAwareDecoder, LightingTokenizer, RadianceMLP])
def test_configs_are_json_round_trippable(cls) -> None:
    import json

    assert cls.PUBLISHED_NAME in ("SLatGaussianRenderer", "Hdri_Encoder", "NeuralBasis")
    for config in (cls.paper_config(), cls.tiny_config()):
        args = json.loads(json.dumps({"name": cls.PUBLISHED_NAME, "args": config}))["args"]
        assert args == config
    a = build_on_meta(cls, cls.paper_config())
    b = build_on_meta(cls, json.loads(json.dumps(cls.paper_config())))
    assert count_parameters(a) == count_parameters(b)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
