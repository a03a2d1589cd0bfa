"""Stage 1 of NeAR: the light-homogenizing SLAT flow f_theta and its LoRA wiring (paper 3.4, A.1).

f_theta is the pretrained SLAT flow f_s, conditioned on the input image (cross-attention, as f_s)
and on the *shaded* SLAT ``Z_s = f_s(I_in)``: ``Z_s`` is concatenated with the noisy latent along
channels, so the input layer takes ``latent + shaded`` channels (8 + 8) and everything else keeps
the published shapes. :func:`from_base_flow` widens a pretrained 8-channel flow with zero columns
for ``Z_s``, so that before fine-tuning f_theta equals f_s exactly.

Fine-tuning uses PEFT LoRA on the attention projections only — ``to_qkv`` (self-attention q, k, v
fused), ``to_q`` and ``to_kv`` (cross-attention) and ``to_out`` — with rank 512 and rsLoRA scaling
``alpha / sqrt(r)`` in the paper; the widened input layer is trained in full (``modules_to_save``).
Adapters are saved in PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``),
or merged into plain weights saved in the ``{name, args}`` checkpoint format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import NearError
from ..sparse import SparseTensor
from ..utils.atomic import atomic_path, atomic_write_json
from .registry import register_model
from .slat_flow import SLatFlowModel

LORA_TARGET_MODULES = r".*\.(self_attn|cross_attn)\.(to_qkv|to_q|to_kv|to_out)"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@register_model("LHSLatFlowModel")
class LHSLatFlowModel(SLatFlowModel):
    """SLAT flow whose input is ``[x_t, Z_s]`` (channels concatenated); output ``out_channels``.

    Same constructor as :class:`SLatFlowModel` plus ``shaded_channels`` (default ``out_channels``);
    ``in_channels`` must equal ``out_channels + shaded_channels`` (16 for TRELLIS latents).
    """

    def __init__(self, *args: Any, shaded_channels: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shaded_channels = self.out_channels if shaded_channels is None else shaded_channels
        if self.in_channels != self.out_channels + self.shaded_channels:
            raise NearError(
                f"LHSLatFlowModel needs in_channels = out_channels + shaded_channels "
                f"({self.out_channels} + {self.shaded_channels}); got {self.in_channels}."
            )

    def forward(  # type: ignore[override]
        self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor, z_s: SparseTensor | None = None
    ) -> SparseTensor:
        """``x`` noisy latent ``[N, out_channels]``; ``z_s`` shaded SLAT on the same voxels."""
        return super().forward(concat_shaded(x, z_s, self.shaded_channels), t, cond)


def concat_shaded(x: SparseTensor, z_s: SparseTensor | None, shaded_channels: int) -> SparseTensor:
    """``[x_t, Z_s]`` along channels, checking that both live on the same voxels."""
    if z_s is None:
        raise NearError(
            "The light-homogenizing flow needs the shaded SLAT z_s (sample it first with the base "
            "TRELLIS SLAT flow on the same coords)."
        )
    if z_s.feats.shape != (x.feats.shape[0], shaded_channels):
        raise NearError(
            f"z_s must have feats [{x.feats.shape[0]}, {shaded_channels}] (same voxels as x); "
            f"got {tuple(z_s.feats.shape)}."
        )
    if z_s.coords is not x.coords and not torch.equal(z_s.coords, x.coords):
        raise NearError("z_s and the noisy latent must have identical coords (same voxels, same order).")
    return x.replace(torch.cat([x.feats, z_s.feats.to(x.dtype)], dim=1))


def from_base_flow(base: SLatFlowModel, shaded_channels: int | None = None) -> LHSLatFlowModel:
    """A homogenizer initialised from a pretrained flow: same weights, zero weights on ``Z_s``.

    The new input layer is ``[W_base, 0]``, so ``f_theta([x, Z_s]) == f_s(x)`` before training.
    """
    args = dict(base.near_config["args"])
    shaded = base.out_channels if shaded_channels is None else shaded_channels
    args["in_channels"] = base.in_channels + shaded
    device = base.input_layer.weight.device
    with torch.device(device):
        model = LHSLatFlowModel(**args, shaded_channels=shaded)
    sd = base.state_dict()
    w = sd["input_layer.weight"]
    sd["input_layer.weight"] = torch.cat([w, w.new_zeros(w.shape[0], shaded)], dim=1)
    model.load_state_dict(sd, strict=True)
    return model


# ---------------------------------------------------------------------- LoRA through PEFT
def lora_config(
    rank: int = 512,
    alpha: float | None = None,
    use_rslora: bool = True,
    dropout: float = 0.0,
    train_input_layer: bool = True,
    target_modules: str = LORA_TARGET_MODULES,
    train_output_layer: bool = False,
    train_modules: list[str] | None = None,
) -> Any:
    """PEFT ``LoraConfig`` for the attention projections (paper: rank 512, rsLoRA).

    ``alpha`` defaults to ``rank`` (the paper gives no value); with rsLoRA the update is scaled by
    ``alpha / sqrt(rank)``. ``train_input_layer`` also trains the (widened) input layer in full,
    ``train_output_layer`` the output layer (needed when the output is widened beyond the base
    flow's channels, e.g. LH + base colour: the new rows start at zero and nothing else reaches them).
    ``train_modules``: more modules trained in full (names as in the flow, e.g. ``"input_blocks.0"``),
    for flows too small for low-rank attention updates alone: the full-resolution I/O blocks are
    the only path by which a voxel's own noisy input reaches its output.
    B is zero-initialised, so a fresh adapter leaves the model unchanged.
    """
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        use_rslora=use_rslora,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=(["input_layer"] if train_input_layer else [])
        + (["out_layer"] if train_output_layer else [])
        + [str(m) for m in (train_modules or [])]
        or None,
        init_lora_weights=True,
        bias="none",
    )


def attach_lora(model: nn.Module, config: Any = None, **kwargs: Any) -> Any:
    """Wrap ``model`` in a PEFT ``PeftModel`` with LoRA adapters (config or :func:`lora_config` kwargs).

    Only the LoRA matrices (and ``modules_to_save``) are trainable afterwards.
    """
    from peft import get_peft_model

    cfg = config if config is not None else lora_config(**kwargs)
    return get_peft_model(model, cfg)


def lora_modules(peft_model: nn.Module) -> list[str]:
    """Names (relative to the base model) of the modules carrying LoRA adapters."""
    from peft.tuners.lora import LoraLayer

    base = _base(peft_model)
    return sorted(n for n, m in base.named_modules() if isinstance(m, LoraLayer))


def _base(peft_model: nn.Module) -> nn.Module:
    return peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model


def merge_lora(peft_model: nn.Module) -> None:
    """Fold the adapters into the base weights in place (reversible with :func:`unmerge_lora`)."""
    from peft.tuners.lora import LoraLayer

    for m in _base(peft_model).modules():
        if isinstance(m, LoraLayer) and not m.merged:
            m.merge()


def unmerge_lora(peft_model: nn.Module) -> None:
    """Undo :func:`merge_lora` (base weights restored up to float rounding)."""
    from peft.tuners.lora import LoraLayer

    for m in _base(peft_model).modules():
        if isinstance(m, LoraLayer) and m.merged:
            m.unmerge()


def merged_model(peft_model: nn.Module) -> nn.Module:
    """The base model with adapters merged and PEFT wrappers removed (plain published key names)."""
    return peft_model.merge_and_unload()


def save_adapters(peft_model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write only the adapters (PEFT layout, atomically): ``adapter_config.json`` + safetensors."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    cfg = peft_model.peft_config["default"].to_dict()
    cfg = json.loads(json.dumps(cfg, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
    sd = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(peft_model).items()}
    with atomic_path(folder / ADAPTER_WEIGHTS) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    atomic_write_json(folder / ADAPTER_CONFIG, cfg)
    return folder


def load_adapters(model: nn.Module, folder: str | os.PathLike[str], trainable: bool = False) -> Any:
    """Attach the adapters saved by :func:`save_adapters` (or PEFT) to ``model``; strict on keys."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, w_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    missing = [p.name for p in (cfg_path, w_path) if not p.is_file()]
    if missing:
        raise NearError(
            f"No LoRA adapters in {folder}: missing {', '.join(missing)} (save with save_adapters)."
        )
    cfg_dict = json.loads(cfg_path.read_text())
    cfg_dict = {k: v for k, v in cfg_dict.items() if k in LoraConfig.__dataclass_fields__}
    cfg_dict.pop("peft_type", None)
    cfg_dict["inference_mode"] = not trainable
    peft_model = get_peft_model(model, LoraConfig(**cfg_dict))
    sd = load_file(str(w_path))
    result = set_peft_model_state_dict(peft_model, sd)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    expected = set(get_peft_model_state_dict_keys(peft_model))
    absent = sorted(expected - set(sd))
    if unexpected or absent:
        raise NearError(
            f"LoRA adapters in {folder} do not fit this model: unexpected {unexpected[:10]}, "
            f"missing {absent[:10]}."
        )
    return peft_model


def get_peft_model_state_dict_keys(peft_model: nn.Module) -> list[str]:
    from peft import get_peft_model_state_dict

    return list(get_peft_model_state_dict(peft_model).keys())
