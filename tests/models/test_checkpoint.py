"""The {name, args} + safetensors checkpoint format: round trips, published layout, strict errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from near_blender import NearError
from near_blender.models import from_pretrained, get_model_class, register_model, save_pretrained
from near_blender.models.slat_flow import SLatFlowModel

from ._helpers import TINY, randomize, sparse_input, tiny_flow


def outputs(model: nn.Module) -> torch.Tensor:
    x = sparse_input(seed=5)
    cond = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        return model(x, torch.tensor([100.0, 900.0]), cond).feats


def published_layout(folder, stem: str = "ckpts/slat_flow_tiny", fp16: bool = True):  # noqa: ANN001, ANN201
    """Write a tiny model the way the TRELLIS release stores it: hand-written JSON, fp16 safetensors."""
    model = randomize(tiny_flow(), seed=3)
    args = {
        "resolution": 64, "in_channels": 8, "out_channels": 8, "model_channels": 32, "cond_channels": 16,
        "num_blocks": 2, "num_heads": 2, "mlp_ratio": 4, "patch_size": 2, "num_io_res_blocks": 2,
        "io_block_channels": [16], "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": fp16,
    }  # fmt: skip
    (folder / "ckpts").mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps({"name": "SLatFlowModel", "args": args}))
    sd = {k: (v.half() if fp16 else v).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / f"{stem}.safetensors"))
    return model


def test_registry_resolves_published_names_and_lists_known_ones() -> None:
    assert get_model_class("SLatFlowModel") is SLatFlowModel
    assert get_model_class("ElasticSLatFlowModel") is SLatFlowModel
    with pytest.raises(NearError, match="Unknown model class 'NoSuchModel'.*SLatFlowModel"):
        get_model_class("NoSuchModel")


def test_save_and_load_round_trip(tmp_path) -> None:  # noqa: ANN001
    model = randomize(tiny_flow(), seed=1).eval()
    cfg_path, w_path = save_pretrained(model, tmp_path, "ckpts/flow")
    cfg = json.loads(cfg_path.read_text())
    assert cfg["name"] == "SLatFlowModel" and cfg["args"]["model_channels"] == TINY["model_channels"]
    assert w_path.name == "flow.safetensors" and not list(tmp_path.rglob(".tmp-*"))
    assert {oct(p.stat().st_mode & 0o777) for p in (cfg_path, w_path)} == {"0o644"}  # readable by others
    loaded = from_pretrained(tmp_path / "ckpts" / "flow")
    assert isinstance(loaded, SLatFlowModel) and not loaded.training
    torch.testing.assert_close(outputs(loaded), outputs(model))
    save_pretrained(model, tmp_path, "pt/flow", weights_format="pt")
    torch.testing.assert_close(outputs(from_pretrained(tmp_path / "pt" / "flow")), outputs(model))


def test_published_fp16_layout_loads_strictly_in_fp32_on_cpu(tmp_path) -> None:  # noqa: ANN001
    ref = published_layout(tmp_path)
    loaded = from_pretrained(tmp_path / "ckpts" / "slat_flow_tiny", device="cpu")
    assert loaded.use_fp16 is False and loaded.blocks[0].self_attn.to_qkv.weight.dtype == torch.float32
    assert loaded.compat == "published"  # the JSON has no "compat": TRELLIS's pooling
    # the same values rounded through fp16, run the way TRELLIS runs them
    ref_half_weights = randomize(tiny_flow(compat="published"), seed=3)
    with torch.no_grad():
        for p in ref_half_weights.parameters():
            p.copy_(p.half().float())
    torch.testing.assert_close(outputs(loaded), outputs(ref_half_weights.eval()))
    assert ref is not None


def test_mis_shaped_missing_and_unexpected_keys_are_named(tmp_path) -> None:  # noqa: ANN001
    published_layout(tmp_path, fp16=False)
    w = tmp_path / "ckpts" / "slat_flow_tiny.safetensors"
    sd = load_file(str(w))
    sd["blocks.1.cross_attn.to_kv.weight"] = torch.zeros(64, 17)
    save_file(sd, str(w))
    with pytest.raises(NearError, match=r"mis-shaped keys \(1\): blocks\.1\.cross_attn\.to_kv\.weight: "
                       r"checkpoint \(64, 17\) vs model \(64, 16\)"):  # fmt: skip
        from_pretrained(tmp_path / "ckpts" / "slat_flow_tiny")
    sd = load_file(str(w))
    sd.pop("blocks.1.cross_attn.to_kv.weight")
    sd.pop("out_layer.bias")
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, str(w))
    with pytest.raises(NearError) as e:
        from_pretrained(tmp_path / "ckpts" / "slat_flow_tiny")
    msg = str(e.value)
    assert "missing keys (2): blocks.1.cross_attn.to_kv.weight, out_layer.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg


def test_bad_paths_and_configs(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(NearError, match="No checkpoint at"):
        from_pretrained(tmp_path / "nothing")
    (tmp_path / "m.json").write_text(json.dumps({"name": "SLatFlowModel", "args": {}}))
    with pytest.raises(NearError, match="no weights beside it"):
        from_pretrained(tmp_path / "m")
    save_file({"a": torch.zeros(1)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(NearError, match="does not fit its constructor"):
        from_pretrained(tmp_path / "m")
    (tmp_path / "c.json").write_text("{not json")
    (tmp_path / "c.safetensors").write_bytes(b"garbage")
    with pytest.raises(NearError, match="Cannot read model config"):
        from_pretrained(tmp_path / "c")


def test_registration_is_open(tmp_path) -> None:  # noqa: ANN001
    @register_model("TestOnlyScale", "Published_Scale")
    class Scale(nn.Module):
        def __init__(self, width: int, factor: float = 2.0) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.full((width,), factor))

    m = Scale(3, factor=0.5)
    save_pretrained(m, tmp_path, "s")
    assert json.loads((tmp_path / "s.json").read_text()) == {
        "name": "TestOnlyScale", "args": {"width": 3, "factor": 0.5}
    }  # fmt: skip
    assert torch.equal(from_pretrained(tmp_path / "s").w, torch.full((3,), 0.5))
    assert get_model_class("Published_Scale") is Scale
