"""Stage 1 of NeAR: the light-homogenizing SLAT flow f_theta and its LoRA wiring (paper 3.4, A.1).

f_theta is the pretrained SLAT flow f_s, conditioned on the input image (cross-attention, as f_s)
and on the *shaded* SLAT ``Z_s = f_s(I_in)``: ``Z_s`` is concatenated with the noisy latent along
channels, so the input layer takes ``latent + shaded`` channels (8 + 8) and everything else keeps
the published shapes. :func:`from_base_flow` widens a pretrained 8-channel flow with zero columns
for ``Z_s`` (and, as an option, zero output rows for a wider latent such as LH + base colour), so
that before fine-tuning f_theta equals f_s exactly; stage-1 training builds its homogenizer with it.

Fine-tuning uses PEFT LoRA on the attention projections only — ``to_qkv`` (self-attention q, k, v
fused), ``to_q`` and ``to_kv`` (cross-attention) and ``to_out`` — with rank 512 and rsLoRA scaling
``alpha / sqrt(r)`` in the paper; the widened input layer is trained in full (``modules_to_save``).
For deployment the adapters are merged into plain weights (:func:`merged_model`), saved in the
``{name, args}`` checkpoint format.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import NearError
from ..sparse import SparseTensor
from .registry import register_model
from .slat_flow import SLatFlowModel

LORA_TARGET_MODULES = r".*\.(self_attn|cross_attn)\.(to_qkv|to_q|to_kv|to_out)"


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


def from_base_flow(
    base: SLatFlowModel, shaded_channels: int | None = None, out_channels: int | None = None
) -> LHSLatFlowModel:
    """The homogenizer ``f_theta`` initialised from the base flow ``f_s`` (paper 3.4): input
    ``[x_t (out_channels), Z_s (shaded_channels)]``, every other shape as ``base``.

    ``shaded_channels`` defaults to ``base.out_channels``; ``out_channels`` (default
    ``base.out_channels``) may widen the output, e.g. LH-SLAT + base-colour SLAT. The base weights
    fill the first ``base.in_channels`` input columns and ``base.out_channels`` output rows; every
    new column and row starts at zero, so with the base's output width ``f_theta([x, Z_s]) == f_s(x)``
    before training. Built on ``base``'s device.
    """
    shaded = base.out_channels if shaded_channels is None else shaded_channels
    out = base.out_channels if out_channels is None else out_channels
    if out < max(base.in_channels, base.out_channels):
        raise NearError(
            f"A homogenizer from a {base.in_channels} -> {base.out_channels} channel flow needs out_channels >= "
            f"{max(base.in_channels, base.out_channels)} (the base weights fill x_t's first channels); got {out}."
        )
    args = {**base.near_config["args"], "in_channels": out + shaded, "out_channels": out}
    with torch.device(base.input_layer.weight.device):
        model = LHSLatFlowModel(**args, shaded_channels=shaded)
    sd = base.state_dict()
    w_in, w_out, b_out = sd["input_layer.weight"], sd["out_layer.weight"], sd["out_layer.bias"]
    new_in = w_in.new_zeros(w_in.shape[0], out + shaded)
    new_in[:, : w_in.shape[1]] = w_in
    new_out = w_out.new_zeros(out, w_out.shape[1])
    new_out[: w_out.shape[0]] = w_out
    new_b = b_out.new_zeros(out)
    new_b[: b_out.shape[0]] = b_out
    sd.update({"input_layer.weight": new_in, "out_layer.weight": new_out, "out_layer.bias": new_b})
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


def unwrap_peft(peft_model: nn.Module) -> nn.Module:
    """The flow inside a PEFT model (its LoRA layers in place); any other module as it is."""
    return peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model


def merged_model(peft_model: nn.Module) -> nn.Module:
    """The base model with adapters merged and PEFT wrappers removed (plain published key names)."""
    return peft_model.merge_and_unload()
