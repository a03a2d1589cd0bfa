"""One checkpoint format for every model: ``<stem>.json`` = ``{"name", "args"}`` + ``<stem>.safetensors``.

``<stem>.pt`` (a plain state dict, as the NeAR release allows) is read too. Loading is strict by
default and reports every missing, unexpected and mis-shaped key by name. Big models are built on
the meta device and materialised straight from the file (no random init of 600M parameters).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import NearError
from ..utils.atomic import atomic_path, atomic_write_json
from .hub import resolve_model_files
from .registry import get_model_class, model_config

_MAX_LISTED = 25


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a ``{"name", "args"}`` model config."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NearError(f"Cannot read model config {path}: {e}") from e
    if not isinstance(cfg, dict) or "name" not in cfg or not isinstance(cfg.get("args", {}), dict):
        raise NearError(f'Model config {path} must be a JSON object {{"name": ..., "args": {{...}}}}.')
    cfg.setdefault("args", {})
    return cfg


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pt`` file (``.pt`` may wrap them in ``state_dict``/``model``)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise NearError(f"Cannot read weights file {path} (corrupt or not a checkpoint): {e}") from e
    if isinstance(obj, dict) and len(obj) == 1:
        ((key, inner),) = obj.items()
        if key in ("state_dict", "model", "module", "ema") and isinstance(inner, dict):
            obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NearError(f"{path} does not hold a state dict (name -> tensor).")
    return obj


def compare_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis-shaped)`` keys of ``sd`` against ``model.state_dict()``."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shaped = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    )
    return missing, unexpected, shaped


def _listing(title: str, items: list[str]) -> str:
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}): " + ", ".join(items[:_MAX_LISTED]) + more


def tied_key_groups(model: nn.Module) -> list[list[str]]:
    """State-dict keys that name one shared tensor of ``model`` (a weight-tied layer reached by
    several paths, e.g. the lighting tokenizer's repeated transformer layer), in groups of >= 2."""
    groups: dict[int, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def check_tied_copies(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "") -> None:
    """Every tied tensor of ``model`` must be stored with equal values under all its keys in ``sd``
    (loading would otherwise keep the last copy silently); NearError naming the keys if not."""
    bad = []
    for keys in tied_key_groups(model):
        stored = [k for k in keys if k in sd]
        first = sd[stored[0]] if stored else None
        for k in stored[1:]:
            other = sd[k]
            if other.shape != first.shape or not torch.equal(other, first):  # type: ignore[union-attr]
                diff = (
                    float((other.float() - first.float()).abs().max())  # type: ignore[union-attr]
                    if other.shape == first.shape  # type: ignore[union-attr]
                    else float("nan")
                )
                bad.append(f"{stored[0]} vs {k} (max abs difference {diff:.3g})")
    if bad:
        raise NearError(
            f"Checkpoint {source or ''} stores different values for weights that this model shares "
            f"(one weight-tied layer): {_listing('differing copies', bad)}. The file is corrupt or was "
            "saved from a model without tied weights; build the model untied (for the lighting "
            'tokenizer: "tie_transformer_weights": false in its JSON) or re-export the checkpoint.'
        )


def load_weights(
    model: nn.Module, sd: dict[str, torch.Tensor], strict: bool = True, source: str = ""
) -> None:
    """Copy ``sd`` into ``model``; mis-shaped keys always fail, missing/unexpected fail when strict,
    and tied tensors must be stored equal under all their keys (:func:`check_tied_copies`)."""
    missing, unexpected, shaped = compare_state_dict(model, sd)
    check_tied_copies(model, sd, source)
    problems = []
    if shaped:
        problems.append(_listing("mis-shaped keys", shaped))
    if strict and missing:
        problems.append(_listing("missing keys", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if problems:
        name = getattr(model, "near_name", type(model).__name__)
        raise NearError(
            f"Checkpoint {source or ''} does not match {name}: "
            + "; ".join(problems)
            + ". Check that the JSON config belongs to these weights."
        )
    if not strict:
        sd = {k: v for k, v in sd.items() if k not in unexpected}
    model.load_state_dict(sd, strict=strict)


def build_model(
    config: dict[str, Any], device: torch.device | str | None = None, meta: bool = False
) -> nn.Module:
    """Instantiate ``config["name"](**config["args"])`` (on the meta device if ``meta``)."""
    cls = get_model_class(config["name"])
    try:
        with torch.device("meta" if meta else (device or "cpu")):
            return cls(**config["args"])
    except TypeError as e:
        raise NearError(f"Model config for {config['name']} does not fit its constructor: {e}") from e


def _has_nonpersistent_buffers(model: nn.Module) -> bool:
    return any(
        name in getattr(m, "_non_persistent_buffers_set", set())
        for _, m in model.named_modules()
        for name in m._buffers
    )


def load_model(
    config_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str],
    strict: bool = True,
    device: torch.device | str | None = None,
    keep_fp16_on_cpu: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build the model of ``config_path`` and load ``weights_path`` into it (in eval mode).

    ``overrides`` replace constructor args. Published ``use_fp16`` models are kept in float32 on
    CPU (fp16 is slow and partly unsupported there) unless ``keep_fp16_on_cpu``.
    """
    cfg = read_config(config_path)
    cfg["args"].update(overrides)
    dev = torch.device(device or "cpu")
    if dev.type == "cpu" and cfg["args"].get("use_fp16") and not keep_fp16_on_cpu:
        cfg["args"]["use_fp16"] = False
    get_model_class(cfg["name"])  # fail fast on unknown classes, before reading large weights
    sd = load_state_dict_file(weights_path)
    model = build_model(cfg, meta=True) if strict else build_model(cfg, device=dev)
    if strict and _has_nonpersistent_buffers(model):
        model = build_model(cfg, device=dev)
    elif strict:
        model = model.to_empty(device=dev)
    load_weights(model, sd, strict=strict, source=str(weights_path))
    return model.eval()


def from_pretrained(
    path: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    strict: bool = True,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Load one model from a local stem (``folder/ckpts/name``) or a Hub path ``org/repo/ckpts/name``."""
    cfg, weights = resolve_model_files(
        path,
        revision=revision,
        cache_dir=cache_dir,
        check_config=lambda p: get_model_class(read_config(p)["name"]),
    )
    return load_model(cfg, weights, strict=strict, device=device, **overrides)


def _unshare(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, cloning those that share storage (safetensors refuses aliasing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in sd.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        else:
            seen.add(ptr)
        out[k] = t
    return out


def save_pretrained(
    model: nn.Module, folder: str | os.PathLike[str], stem: str, weights_format: str = "safetensors"
) -> tuple[Path, Path]:
    """Write ``folder/stem.json`` and ``folder/stem.safetensors`` (or ``.pt``) atomically."""
    if weights_format not in ("safetensors", "pt"):
        raise NearError(f"weights_format must be 'safetensors' or 'pt', got {weights_format!r}.")
    cfg = model_config(model)
    base = Path(folder) / stem
    cfg_path = base.with_name(base.name + ".json")
    w_path = base.with_name(base.name + "." + weights_format)
    try:
        json.dumps(cfg)
    except TypeError as e:
        raise NearError(f"Constructor arguments of {cfg['name']} are not JSON-serializable: {e}") from e
    sd = _unshare(model.state_dict())
    with atomic_path(w_path) as tmp:
        if weights_format == "safetensors":
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(sd, str(tmp))
    atomic_write_json(cfg_path, cfg)
    return cfg_path, w_path
