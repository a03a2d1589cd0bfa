"""NearPipeline: local pipeline folders (TRELLIS json / NeAR yaml), stage-1 sampling API."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from near_blender import NearError
from near_blender.models.homogenizer import from_base_flow
from near_blender.pipeline import NearPipeline, sample_normalized_slat
from near_blender.sparse import SparseTensor
from near_blender.utils.progress import Cancelled

from ._helpers import randomize, tiny_flow

NORM = {"mean": [0.1 * i for i in range(8)], "std": [1.0 + 0.1 * i for i in range(8)]}


def make_pipeline() -> NearPipeline:
    args = {
        "slat_sampler": {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                         "params": {"steps": 4, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0],
                                    "rescale_t": 3.0}},
        "slat_normalization": NORM,
    }  # fmt: skip
    base = randomize(tiny_flow(), seed=1).eval()
    homog = from_base_flow(randomize(tiny_flow(), seed=2)).eval()
    with torch.no_grad():
        homog.input_layer.weight[:, 8:] = 0.1
    models = {"slat_flow_model": homog, "slat_flow_model_shaded": base}
    return NearPipeline(models, args)


def coords() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.unique(torch.randint(16, 40, (150, 3), generator=g), dim=0)


def sample(pipe: NearPipeline, model: str, cond: torch.Tensor, seed: int | None = None, **kw) -> SparseTensor:  # noqa: ANN003
    """``pipe.models[model]`` sampled with the pipeline's ``slat_sampler`` (``image_to_slat``'s default)."""
    g = None if seed is None else torch.Generator().manual_seed(seed)
    return sample_normalized_slat(pipe.models[model], cond, coords(), pipe.slat_sampler, generator=g, **kw)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_save_load_round_trip_and_reproducible_sampling(tmp_path, fmt: str) -> None:  # noqa: ANN001
    pipe = make_pipeline()
    out = pipe.save_pretrained(tmp_path, file_format=fmt)
    assert out.name == f"pipeline.{fmt}" and (tmp_path / "ckpts" / "slat_flow_model.safetensors").is_file()
    loaded = NearPipeline.from_pretrained(tmp_path)
    assert loaded.file_format == fmt and set(loaded.models) == set(pipe.models)
    cond = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(1))
    assert loaded.slat_sampler == pipe.slat_sampler and loaded.args["slat_normalization"] == NORM
    a = sample(pipe, "slat_flow_model_shaded", cond, seed=5)
    b = sample(loaded, "slat_flow_model_shaded", cond, seed=5)
    torch.testing.assert_close(a.feats, b.feats, atol=1e-5, rtol=1e-5)
    assert a.coords[:, 0].eq(0).all() and a.feats.shape == (coords().shape[0], 8)


def test_homogenizing_flow_needs_and_uses_the_shaded_slat() -> None:
    pipe = make_pipeline()
    cond = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(1))
    z_s = sample(pipe, "slat_flow_model_shaded", cond, seed=2)
    with pytest.raises(NearError, match="pass z_s"):
        sample(pipe, "slat_flow_model", cond)
    a = sample(pipe, "slat_flow_model", cond, seed=3, z_s=z_s)
    b = sample(pipe, "slat_flow_model", cond, seed=3, z_s=z_s.replace(z_s.feats + 1))
    assert isinstance(a, SparseTensor) and not torch.allclose(a.feats, b.feats)


def test_one_sampler_for_plain_peft_and_merged_flows() -> None:
    """``sample_normalized_slat`` (training samples with it too) takes numpy coords, feeds ``z_s`` to a
    PEFT-wrapped homogenizer as to its merged copy, and refuses ``z_s`` for a flow without that input."""
    from near_blender.models.homogenizer import attach_lora, merged_model
    from near_blender.models.sampler import FlowEulerSampler

    pipe = make_pipeline()
    sampler = FlowEulerSampler(steps=2, cfg_strength=0.0)
    cond = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(1))
    c = coords()
    z_s = torch.randn(len(c), 8, generator=torch.Generator().manual_seed(2))
    peft = attach_lora(from_base_flow(randomize(tiny_flow(), seed=2)), rank=2).eval()
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
    merged = merged_model(copy.deepcopy(peft)).eval()

    def run(flow, cc, **kw):  # noqa: ANN001, ANN003, ANN202
        return sample_normalized_slat(
            flow, cond, cc, sampler, generator=torch.Generator().manual_seed(3), **kw
        )

    a = run(peft, c.numpy(), z_s=z_s)
    torch.testing.assert_close(a.feats, run(merged, c, z_s=z_s).feats, atol=1e-5, rtol=1e-5)
    assert a.coords.dtype == torch.int32 and a.coords[:, 0].eq(0).all()
    with pytest.raises(NearError, match="takes no shaded SLAT"):
        run(pipe.models["slat_flow_model_shaded"], c, z_s=z_s)
    with pytest.raises(NearError, match=r"coords must be \[N, 3\] or \[N, 4\]"):
        run(merged, c[:, :2], z_s=z_s)


def test_progress_and_cancellation() -> None:
    pipe = make_pipeline()
    seen: list[tuple[float, str]] = []
    cond = torch.zeros(1, 2, 16)
    sample(pipe, "slat_flow_model_shaded", cond, steps=3, progress=lambda f, m: seen.append((f, m)))
    assert [f for f, _ in seen] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0]) and seen[-1][1] == "sampling: 3/3"
    with pytest.raises(Cancelled):
        sample(pipe, "slat_flow_model_shaded", cond, cancel=lambda: True)


def test_unresolvable_models_are_listed_and_subsets_load(tmp_path) -> None:  # noqa: ANN001
    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "pipeline.json").read_text())
    data["args"]["models"]["sparse_structure_decoder"] = "ckpts/ss_dec"
    (tmp_path / "ckpts" / "ss_dec.json").write_text(
        json.dumps({"name": "SparseStructureDecoder", "args": {}})
    )
    (tmp_path / "ckpts" / "ss_dec.safetensors").write_bytes(b"")
    (tmp_path / "pipeline.json").write_text(json.dumps(data))
    with pytest.raises(NearError, match=r"sparse_structure_decoder \(SparseStructureDecoder\)"):
        NearPipeline.from_pretrained(tmp_path)
    sub = NearPipeline.from_pretrained(tmp_path, models=["slat_flow_model_shaded"])
    assert list(sub.models) == ["slat_flow_model_shaded"]
    with pytest.raises(NearError, match="has no model"):
        NearPipeline.from_pretrained(tmp_path, models=["decoder"])
    with pytest.raises(NearError, match="no pipeline file"):
        NearPipeline.from_pretrained(tmp_path / "ckpts")


def test_image_to_slat_with_the_trainable_encoder(tmp_path) -> None:  # noqa: ANN001
    from near_blender.models.image_encoder import PatchImageEncoder

    pipe = make_pipeline()
    pipe.models["image_cond_model"] = PatchImageEncoder(embed_dim=16, depth=1, num_heads=2).eval()
    pipe.save_pretrained(tmp_path)
    loaded = NearPipeline.from_pretrained(tmp_path)
    images = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    tokens = loaded.encode_image(images)
    assert tokens.shape == (1, 1 + 64, 16)
    torch.testing.assert_close(tokens, pipe.encode_image(images))
    slat = sample(loaded, "slat_flow_model_shaded", tokens, steps=2)
    assert torch.isfinite(slat.feats).all()
    with pytest.raises(NearError, match="no image encoder"):
        NearPipeline({}, {}).encode_image(images)


def test_settings_that_would_do_nothing_are_guarded_or_absent(tmp_path):
    """A stage-2 conditioning this version does not compute is an error, not silently ignored; a
    delighting pipeline (no flow) is saved without a flow sampler."""
    import numpy as np

    from near_blender.models.hub import bundled_model_folder
    from near_blender.render.envmap import Environment

    pipe = NearPipeline.from_pretrained(bundled_model_folder())
    env = Environment(np.ones((16, 32, 3), np.float32))
    assert pipe.conditioning(env) is not None
    pipe.args["stage2"]["conditioning"] = {"directions": "world", "log_norm": "fixed", "ldr": "reinhard"}
    with pytest.raises(NearError, match="'directions': 'world'"):
        pipe.conditioning(env)
    pipe.args["stage2"].pop("conditioning")
    pipe.save_pretrained(tmp_path / "copy")
    saved = json.loads((tmp_path / "copy" / "pipeline.json").read_text())
    assert saved["args"]["stage1"]["method"] == "delight" and "slat_sampler" not in saved["args"]
