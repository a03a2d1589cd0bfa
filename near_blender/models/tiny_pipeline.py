"""A complete, tiny, randomly initialised NeAR pipeline (stage 1 + stage 2) in the
``from_pretrained`` layout: the stand-in model of tests, benchmarks and the demo when the bundled
default model is not installed (its images are noise-like, its timings are those of near-tiny)."""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_pipeline(folder: str | Path, latent: int = 16, seed: int = 0) -> Path:
    """Write the pipeline into ``folder`` and return it."""
    from ..pipeline import NearPipeline
    from .homogenizer import LHSLatFlowModel
    from .image_encoder import PatchImageEncoder
    from .relightable import RelightableDecoder, stage2_configs
    from .slat_flow import SLatFlowModel

    folder = Path(folder)
    torch.manual_seed(seed)
    enc = PatchImageEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    flow_args = SLatFlowModel.tiny_config(in_channels=8, out_channels=8, cond_channels=32, model_channels=32,
                                          num_blocks=1, io_block_channels=[16])  # fmt: skip
    base = SLatFlowModel(**flow_args)
    lh = LHSLatFlowModel(
        **{**flow_args, "in_channels": latent + 8, "out_channels": latent}, shaded_channels=8
    )
    s2 = RelightableDecoder.from_configs(stage2_configs("near-tiny", decoder={"latent_channels": latent}))
    norm = {"mean": [0.0] * latent, "std": [1.0] * latent}
    args = {
        "stage1": {
            "normalization": {"shaded": {"mean": [0.0] * 8, "std": [1.0] * 8}, "lh": norm},
            "image_size": 32,
            "sampler": {"steps": 2, "rescale_t": 3.0, "cfg_strength": 0.0},
        },
        "stage2": {"slat_normalization": norm, "env_height": 32, "use_bc_slat": latent == 16},
        "model_id": "tiny-random",
    }
    models = {
        "image_cond_model": enc,
        "slat_flow_model": base,
        "lh_slat_flow_model": lh,
        **s2.stage2_models(),
    }
    NearPipeline(models=models, args=args).save_pretrained(folder)
    return folder
