"""Stage-2 models through the registry and the one checkpoint format (strict round trips)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from near_blender import NearError
from near_blender.models import from_pretrained, get_model_class, save_pretrained
from near_blender.models.intrinsic_decoder import IntrinsicAwareDecoder
from near_blender.models.lighting_decoder import LightingAwareDecoder
from near_blender.models.lighting_tokenizer import LightingTokenizer
from near_blender.models.radiance_mlp import RadianceMLP

PUBLISHED = {
    "SLatGaussianDecoder": IntrinsicAwareDecoder,
    "SLatGaussianRenderer": LightingAwareDecoder,
    "Hdri_Encoder": LightingTokenizer,
    "NeuralBasis": RadianceMLP,
}


def test_registry_finds_published_names_in_a_fresh_process() -> None:
    """The lazy import of ``get_model_class`` must find every stage-2 class without prior imports."""
    code = (
        "from near_blender.models import get_model_class\n"
        "print(' '.join(get_model_class(n).__name__ for n in "
        "('SLatGaussianDecoder', 'SLatGaussianRenderer', 'Hdri_Encoder', 'NeuralBasis')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == [
        "IntrinsicAwareDecoder",
        "LightingAwareDecoder",
        "LightingTokenizer",
        "RadianceMLP",
    ]
    for name, cls in PUBLISHED.items():
        assert get_model_class(name) is cls
        assert cls.near_name == name  # the canonical (saved) name is the published one


def _randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_round_trip_is_strict_and_exact(name: str, tmp_path) -> None:
    cls = PUBLISHED[name]
    kw = {"register_mode": "aggregate"} if cls is IntrinsicAwareDecoder else {}
    model = _randomized(cls(**cls.tiny_config(**kw)), seed=len(name)).eval()
    cfg_path, w_path = save_pretrained(model, tmp_path, "ckpts/" + name.lower())
    cfg = json.loads(cfg_path.read_text())
    want = cls.tiny_config(**kw)
    assert cfg["name"] == name and {k: cfg["args"].get(k) for k in want} == want
    loaded = from_pretrained(tmp_path / "ckpts" / name.lower())
    assert type(loaded) is cls and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert set(load_file(str(w_path))) == set(a)  # strict: every key stored, nothing else


def test_tokenizer_tied_layers_save_and_load_tied(tmp_path) -> None:
    tok = _randomized(LightingTokenizer(**LightingTokenizer.tiny_config()), seed=3).eval()
    layers = tok.transformer_encoder.layers
    assert layers[0] is layers[1]
    _, w_path = save_pretrained(tok, tmp_path, "hdri_encoder")
    stored = load_file(str(w_path))
    k0, k1 = "transformer_encoder.layers.0.linear1.weight", "transformer_encoder.layers.1.linear1.weight"
    assert torch.equal(stored[k0], stored[k1])  # stored twice (published layout), as clones
    loaded = from_pretrained(tmp_path / "hdri_encoder")
    ll = loaded.transformer_encoder.layers
    assert ll[0] is ll[1]  # still one layer object: the weights stay tied after loading
    assert ll[0].linear1.weight.data_ptr() == ll[1].linear1.weight.data_ptr()
    x = torch.randn(1, 9, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tok(x))
    # Loading distinct values into the two copies cannot silently untie them: the last one wins
    # for both (they are one tensor).
    sd = dict(stored)
    sd[k1] = sd[k1] + 1.0
    loaded.load_state_dict(sd)
    assert torch.equal(ll[0].linear1.weight, ll[1].linear1.weight)


def test_differing_tied_copies_in_a_checkpoint_are_named(tmp_path) -> None:
    """The published tokenizer stores its shared layer twice; if the copies differ, loading must
    not silently keep the last one (issue 17, 4)."""
    from safetensors.torch import save_file

    tok = _randomized(LightingTokenizer(**LightingTokenizer.tiny_config()), seed=4).eval()
    _, w_path = save_pretrained(tok, tmp_path, "hdri_encoder")
    stored = load_file(str(w_path))
    k0, k1 = "transformer_encoder.layers.0.linear2.bias", "transformer_encoder.layers.1.linear2.bias"
    stored[k1] = stored[k1].clone()
    stored[k1][3] += 0.25
    save_file(stored, str(w_path))
    with pytest.raises(NearError, match=rf"differing copies.*{k0} vs {k1} \(max abs difference 0.25\).*"
                       r"tie_transformer_weights\": false"):  # fmt: skip
        from_pretrained(tmp_path / "hdri_encoder")
    # the untied build takes both copies as they are
    cfg = json.loads((tmp_path / "hdri_encoder.json").read_text())
    cfg["args"]["tie_transformer_weights"] = False
    (tmp_path / "hdri_encoder.json").write_text(json.dumps(cfg))
    untied = from_pretrained(tmp_path / "hdri_encoder")
    assert torch.equal(untied.state_dict()[k1], stored[k1]) and not torch.equal(
        untied.state_dict()[k0], stored[k1]
    )


def test_pipeline_round_trip_under_the_published_names(tmp_path) -> None:
    from near_blender.models.relightable import RelightableDecoder
    from near_blender.pipeline import NearPipeline
    from tests.models_stage2._stage2_helpers import camera, sphere_slat, tiny_stack

    stack = tiny_stack(seed=9)
    NearPipeline(stack.stage2_models(), file_format="yaml").save_pretrained(tmp_path)
    assert (tmp_path / "pipeline.yaml").exists() and (tmp_path / "ckpts" / "renderer.safetensors").exists()
    pipe = NearPipeline.from_pretrained(tmp_path)
    loaded = RelightableDecoder.from_models(pipe.models, backend="torch")
    slat, env = sphere_slat(0.12), torch.randn(1, 9, 64, 64)
    vm, K = camera((0.8, 0.6, 0.5), 16, 16)
    with torch.no_grad():
        a = stack(slat, env, vm[None], K[None], 16, 16)
        b = loaded(slat, env, vm[None], K[None], 16, 16)
    for k in a:
        assert torch.equal(a[k], b[k]), k
