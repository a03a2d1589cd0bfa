"""What ``near eval`` evaluates and produces: tasks, methods, the run's settings (fingerprinted
for resume) and the per-asset results. Shared by the evaluation (:mod:`.tasks`) and its report
(:mod:`.report`), which import this module and not each other."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import ViewRecord
from .irradiance import DEFAULT_HEIGHT

TASKS = ("gbuffer_forward", "random_lit_reconstruction", "unknown_lit_relighting", "novel_view_relighting")
METHODS = ("ours", "lambertian", "baked", "delit")
TASK_METHODS: dict[str, tuple[str, ...]] = {
    "gbuffer_forward": ("ours", "lambertian"),
    "random_lit_reconstruction": ("ours", "lambertian"),
    "unknown_lit_relighting": ("ours", "lambertian", "baked", "delit"),
    "novel_view_relighting": ("ours", "lambertian", "baked", "delit"),
}
SHEET_COLUMNS = ("input", "gt", *METHODS)
RESULT_VERSION = 4  # 3: the baked baseline is rendered by Blender; 4: the delit baseline


@dataclass
class EvalConfig:
    """Settings of one ``near eval`` run (everything that changes the numbers is fingerprinted)."""

    data: str
    out: str
    model: str | None = None
    assets: list[str] | None = None  # asset ids; default: the split
    split: str = "heldout"  # heldout | all
    limit: int | None = None  # at most this many assets
    tasks: tuple[str, ...] = TASKS
    methods: tuple[str, ...] = METHODS
    inputs: int = 1  # input views per asset used as the single image
    steps: int | None = None  # stage-1 sampler steps (default: the pipeline's)
    seed: int = 0
    irradiance_height: int = DEFAULT_HEIGHT
    baked_engine: str = "dataset"  # dataset | eevee | cycles: what renders the baked baseline
    blender: str | None = None  # Blender binary for the baked baseline (default: as `near datagen`)
    device: str = "cpu"
    resume: bool = True
    progress: bool = True
    sheet_rows: int = 4
    sheet_cell: int = 128

    def fingerprint(self) -> str:
        keys = (
            "data",
            "model",
            "tasks",
            "methods",
            "inputs",
            "steps",
            "seed",
            "irradiance_height",
            "baked_engine",
        )
        d = {k: getattr(self, k) for k in keys}
        d["model"] = (
            str(Path(self.model).resolve()) if self.model and Path(self.model).exists() else self.model
        )
        d["data"] = str(Path(self.data).resolve())
        if self.model and Path(self.model).is_dir() and "ours" in self.methods:
            # a retrained model saved into the same folder must not reuse old results
            d["model_files"] = sorted(
                (str(p.relative_to(self.model)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in Path(self.model).rglob("*")
                if p.is_file() and p.suffix in (".json", ".yaml", ".yml", ".safetensors")
            )
        d["tasks"], d["methods"] = list(self.tasks), list(self.methods)
        d["version"] = RESULT_VERSION
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    """One evaluated image: a task, an asset, the input view index (None for gbuffer_forward) and
    the target view record (its camera, its lighting and its file = the ground truth)."""

    task: str
    asset_id: str
    input: int | None
    target: ViewRecord


@dataclass
class AssetResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # task -> column -> image
    notes: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)  # tasks that had images to evaluate


def mean_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None
