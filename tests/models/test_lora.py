"""Stage-1 homogenizer: Z_s concatenation and PEFT LoRA on exactly the attention projections."""

from __future__ import annotations

import math

import pytest
import torch
from peft.tuners.lora import LoraLayer

from near_blender import NearError
from near_blender.models import from_pretrained, save_pretrained
from near_blender.models.homogenizer import LHSLatFlowModel, attach_lora, from_base_flow, merged_model

from ._helpers import randomize, sparse_input, tiny_flow


def inputs():  # noqa: ANN201
    x = sparse_input(seed=11)
    g = torch.Generator().manual_seed(12)
    z_s = x.replace(torch.randn(x.feats.shape, generator=g))
    return x, torch.tensor([250.0, 750.0]), torch.randn(2, 4, 16, generator=g), z_s


def homogenizer(seed: int = 0) -> LHSLatFlowModel:
    return from_base_flow(randomize(tiny_flow(), seed=seed)).eval()


def randomize_lora_b(peft_model, seed: int = 0) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_homogenizer_starts_equal_to_base_flow_and_uses_z_s() -> None:
    base = randomize(tiny_flow(), seed=1).eval()
    model = from_base_flow(base).eval()
    assert model.in_channels == 16 and model.input_layer.weight.shape == (16, 16)
    x, t, cond, z_s = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond, z_s=z_s).feats, base(x, t, cond).feats)
        model.input_layer.weight[:, 8:] = 0.3
        assert not torch.allclose(model(x, t, cond, z_s=z_s).feats, base(x, t, cond).feats)
    with pytest.raises(NearError, match="shaded SLAT z_s"):
        model(x, t, cond)
    with pytest.raises(NearError, match="in_channels = out_channels \\+ shaded_channels"):
        LHSLatFlowModel(**{**base.near_config["args"], "in_channels": 9})


def test_homogenizer_with_a_wider_output_starts_as_the_base_flow() -> None:
    """``out_channels`` widens x_t and the output (LH + base colour): the base weights fill the first
    channels, the new input columns and output rows are zero."""
    base = randomize(tiny_flow(), seed=1).eval()
    model = from_base_flow(base, shaded_channels=8, out_channels=16).eval()
    assert (model.in_channels, model.out_channels, model.shaded_channels) == (24, 16, 8)
    x, t, cond, z_s = inputs()
    g = torch.Generator().manual_seed(3)
    x16 = x.replace(torch.cat([x.feats, torch.randn(x.feats.shape, generator=g)], 1))
    with torch.no_grad():
        out = model(x16, t, cond, z_s=z_s).feats
        torch.testing.assert_close(out[:, :8], base(x, t, cond).feats)
    assert out[:, 8:].abs().max() == 0
    with pytest.raises(NearError, match="out_channels >= 8"):
        from_base_flow(base, out_channels=4)


def test_lora_targets_exactly_attention_projections() -> None:
    peft_model = attach_lora(homogenizer(), rank=4, alpha=8)
    projections = (
        "self_attn.to_qkv",
        "self_attn.to_out",
        "cross_attn.to_q",
        "cross_attn.to_kv",
        "cross_attn.to_out",
    )
    expected = sorted(f"blocks.{i}.{a}" for i in range(2) for a in projections)
    adapted = sorted(n for n, m in peft_model.get_base_model().named_modules() if isinstance(m, LoraLayer))
    assert adapted == expected
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "input_layer.modules_to_save" in n for n in trainable)
    assert any("input_layer.modules_to_save" in n for n in trainable)
    layer = peft_model.get_base_model().blocks[0].self_attn.to_qkv
    assert math.isclose(layer.scaling["default"], 8 / math.sqrt(4))  # rsLoRA: alpha / sqrt(r)
    assert layer.lora_A["default"].weight.shape == (4, 32) and layer.lora_B["default"].weight.shape == (96, 4)


def test_zero_b_equals_base_then_merge_unmerge_round_trips() -> None:
    model = homogenizer(seed=2)
    x, t, cond, z_s = inputs()
    with torch.no_grad():
        base_out = model(x, t, cond, z_s=z_s).feats.clone()
    base_w = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = attach_lora(model, rank=4, alpha=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x, t, cond, z_s=z_s).feats, base_out, atol=0, rtol=0)
        randomize_lora_b(peft_model)
        adapted = peft_model(x, t, cond, z_s=z_s).feats.clone()
        assert (adapted - base_out).abs().max() > 1e-3
        peft_model.merge_adapter()  # PEFT folds the adapters in place, reversibly
        torch.testing.assert_close(peft_model(x, t, cond, z_s=z_s).feats, adapted, atol=1e-5, rtol=1e-5)
        w = peft_model.get_base_model().blocks[1].cross_attn.to_kv.base_layer.weight
        assert not torch.allclose(w, base_w["blocks.1.cross_attn.to_kv.weight"])
        peft_model.unmerge_adapter()
        torch.testing.assert_close(w, base_w["blocks.1.cross_attn.to_kv.weight"], atol=1e-6, rtol=0)
        torch.testing.assert_close(peft_model(x, t, cond, z_s=z_s).feats, adapted, atol=1e-5, rtol=1e-5)


def test_merged_save_reproduces_the_adapted_homogenizer(tmp_path) -> None:  # noqa: ANN001
    """Stage 1 deploys the homogenizer with its adapters merged (``merged_model``), saved as a plain
    ``{name, args}`` checkpoint: it loads as an LHSLatFlowModel and predicts as the adapted model."""
    x, t, cond, z_s = inputs()
    peft_model = attach_lora(homogenizer(seed=3), rank=4, alpha=4).eval()
    randomize_lora_b(peft_model, seed=5)
    with torch.no_grad():
        peft_model.get_base_model().input_layer.modules_to_save["default"].weight[:, 8:] = 0.05
        adapted = peft_model(x, t, cond, z_s=z_s).feats.clone()
    merged = merged_model(peft_model)
    assert "blocks.0.self_attn.to_qkv.weight" in merged.state_dict()
    save_pretrained(merged, tmp_path, "ckpts/homogenizer")
    again = from_pretrained(tmp_path / "ckpts" / "homogenizer")
    assert isinstance(again, LHSLatFlowModel)
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, cond, z_s=z_s).feats, adapted, atol=1e-5, rtol=1e-5)


def test_train_modules_are_trained_in_full_and_merged() -> None:
    """``train_modules`` (the default model's full-resolution I/O blocks) train every weight of the
    named blocks alongside the adapters, and the merged export carries the trained copies."""
    x, t, cond, z_s = inputs()
    plain = attach_lora(homogenizer(seed=4), rank=4)
    extra = attach_lora(homogenizer(seed=4), rank=4, train_modules=["input_blocks.0", "out_blocks.0"])
    trainable = {n for n, p in extra.named_parameters() if p.requires_grad}
    assert any("input_blocks.0.modules_to_save" in n for n in trainable)
    assert any("out_blocks.0.modules_to_save" in n for n in trainable)
    assert not any("input_blocks.0" in n for n, p in plain.named_parameters() if p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(extra(x, t, cond, z_s=z_s).feats, plain(x, t, cond, z_s=z_s).feats)
        trained = extra.get_base_model().input_blocks[0].modules_to_save["default"]
        for p in trained.parameters():
            p.add_(0.05)
        adapted = extra(x, t, cond, z_s=z_s).feats.clone()
    assert not torch.allclose(adapted, plain(x, t, cond, z_s=z_s).feats)
    merged = merged_model(extra)
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t, cond, z_s=z_s).feats, adapted, atol=1e-6, rtol=0)
