"""Helpers for the ``{name, args}`` checkpoint convention of the stage-2 models.

Every model class has ``paper_config(**overrides)`` and ``tiny_config(**overrides)`` classmethods
returning plain JSON-serializable constructor kwargs; :func:`merge_config` applies the overrides
and rejects names the constructor does not take. :func:`adopt_children` lets a model keep the
published flat state-dict layout (``ob_views_encoder.weight``, ``gs_out_layer.0.weight``, ...)
while the code that owns those layers lives in its own small module.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from torch import nn

from .. import NearError


def merge_config(cls: type, base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``overrides`` (deep-copied); unknown keyword names raise NearError."""
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params and not accepts_any]
    if unknown:
        raise NearError(f"{cls.__name__} has no constructor argument(s) {', '.join(sorted(unknown))}.")
    out = copy.deepcopy(base)
    out.update(copy.deepcopy(overrides))
    return out


def adopt_children(parent: nn.Module, child: nn.Module) -> None:
    """Register ``child``'s direct submodules on ``parent`` under their own names.

    The layer objects are shared, so ``child.forward`` keeps working and sees every weight update,
    device move or ``load_state_dict`` done through ``parent``; the state-dict keys are the flat
    published ones. ``child`` must not hold parameters or buffers of its own (those would not
    follow ``parent``), and the names must not clash.
    """
    if (
        next(child.parameters(recurse=False), None) is not None
        or next(child.buffers(recurse=False), None) is not None
    ):
        raise NearError(f"{type(child).__name__} holds its own tensors; it cannot be adopted flat.")
    for name, module in child.named_children():
        if hasattr(parent, name):
            raise NearError(f"{type(parent).__name__} already has an attribute {name!r}.")
        parent.add_module(name, module)
