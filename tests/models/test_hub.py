"""Hub resolution with the network off: a test-populated cache works, an absent repo explains the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from near_blender import NearError
from near_blender.models import from_pretrained, save_pretrained
from near_blender.pipeline import NearPipeline

from ._helpers import randomize, sparse_input, tiny_flow


def populate_cache(
    cache: Path, repo_id: str, files: dict[str, Path], ref: str = "main", commit: str = "a" * 40
) -> Path:
    """Lay files out as huggingface_hub does: models--org--repo/snapshots/<commit>/..., refs/<ref>."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snap = root / "snapshots" / commit
    for rel, src in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, snap / rel)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture()
def offline(monkeypatch, tmp_path):  # noqa: ANN001, ANN201
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf_cache"


def model_files(tmp_path: Path, seed: int) -> tuple[torch.nn.Module, dict[str, Path]]:
    model = randomize(tiny_flow(), seed=seed).eval()
    cfg, w = save_pretrained(model, tmp_path / f"src{seed}", "ckpts/flow")
    return model, {"ckpts/flow.json": cfg, "ckpts/flow.safetensors": w}


def velocity(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(sparse_input(seed=1), torch.tensor([500.0, 500.0]), torch.ones(1, 2, 16)).feats


def test_model_from_offline_hub_cache(offline, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    model, files = model_files(tmp_path, 1)
    populate_cache(offline, "org/repo", files)
    loaded = from_pretrained("org/repo/ckpts/flow", cache_dir=offline)
    torch.testing.assert_close(velocity(loaded), velocity(model))
    # the cache location is also taken from the environment at call time
    monkeypatch.setenv("HF_HUB_CACHE", str(offline))
    torch.testing.assert_close(velocity(from_pretrained("org/repo/ckpts/flow")), velocity(model))


def test_revision_selects_another_snapshot(offline, tmp_path) -> None:  # noqa: ANN001
    main_model, main_files = model_files(tmp_path, 1)
    v1_model, v1_files = model_files(tmp_path, 2)
    populate_cache(offline, "org/repo", main_files)
    populate_cache(offline, "org/repo", v1_files, ref="v1", commit="b" * 40)
    loaded = from_pretrained("org/repo/ckpts/flow", revision="v1", cache_dir=offline)
    torch.testing.assert_close(velocity(loaded), velocity(v1_model))
    assert not torch.allclose(velocity(loaded), velocity(main_model))


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_pipeline_from_offline_hub_cache(offline, tmp_path, fmt: str) -> None:  # noqa: ANN001
    model, files = model_files(tmp_path, 3)
    args = {
        "models": {"slat_flow_model": "ckpts/flow"},
        "slat_sampler": {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                         "params": {"steps": 3, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0],
                                    "rescale_t": 3.0}},
        "slat_normalization": {"mean": [0.5] * 8, "std": [2.0] * 8},
    }  # fmt: skip
    pfile = tmp_path / f"pipeline.{fmt}"
    if fmt == "json":
        pfile.write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": args}))
    else:
        import yaml

        pfile.write_text(yaml.safe_dump({"name": "NeARImageToRelightable3DPipeline", "args": args}))
    populate_cache(offline, "org/near", {**files, pfile.name: pfile})
    pipe = NearPipeline.from_pretrained("org/near", cache_dir=offline)
    assert set(pipe.models) == {"slat_flow_model"} and pipe.slat_sampler.steps == 3
    torch.testing.assert_close(velocity(pipe.models["slat_flow_model"]), velocity(model))


def test_absent_repo_with_network_off_says_how_to_fix(offline) -> None:  # noqa: ANN001
    with pytest.raises(NearError) as e:
        from_pretrained("org/absent/ckpts/flow", cache_dir=offline)
    msg = str(e.value)
    assert "org/absent/ckpts/flow.json" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "HF_HUB_OFFLINE=0" in msg and "local folder" in msg
    with pytest.raises(NearError, match="HF_HUB_OFFLINE=1"):
        NearPipeline.from_pretrained("org/absent", cache_dir=offline)


def test_unknown_classes_are_reported_before_their_weights_are_fetched(offline, tmp_path) -> None:  # noqa: ANN001
    _, files = model_files(tmp_path, 4)
    ss = tmp_path / "ss_dec.json"
    ss.write_text(json.dumps({"name": "SparseStructureDecoder", "args": {}}))
    pfile = tmp_path / "pipeline.json"
    models = {"slat_flow_model": "ckpts/flow", "sparse_structure_decoder": "ckpts/ss_dec"}
    pfile.write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {"models": models}}))
    # the decoder's weights are not in the cache: the class check must come first
    populate_cache(offline, "org/trellis", {**files, "ckpts/ss_dec.json": ss, "pipeline.json": pfile})
    with pytest.raises(
        NearError, match=r"sparse_structure_decoder \(SparseStructureDecoder\).*models=\[\.\.\.\]"
    ):
        NearPipeline.from_pretrained("org/trellis", cache_dir=offline)
    pipe = NearPipeline.from_pretrained("org/trellis", cache_dir=offline, models=["slat_flow_model"])
    assert list(pipe.models) == ["slat_flow_model"]
