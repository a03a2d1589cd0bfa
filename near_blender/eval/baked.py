"""Baseline (a), the decoupled "baked texture" asset, rendered by Blender (bpy-free side).

What decoupled image-to-3D pipelines ship: the asset's geometry with the input photo projected onto
it as the base colour (shadows and highlights of the input lighting baked in), shaded by a default
Principled BSDF (roughness 0.5, specular 0.5, not metallic) under the target lighting. The Blender
side (``operators/datagen/baked.py``, run through ``operators/datagen/headless.py baked``) rebuilds
each asset exactly as ``near datagen`` did, gives every surface a camera-projector material (the
input image, exact per-pixel perspective projection from the input camera: a projector paints the
surfaces the input does not see with the colour of the pixel they fall into), and renders every
target view with the engine and settings of the dataset's ground truth (or the engine asked for).

This module plans the renders (a JSON job), runs Blender on the missing ones with a progress bar,
and reads the results; renders are cached under ``R/baked/`` (atomic files, resumed by a re-run,
cleared when the dataset or the engine changes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError
from ..data.config import DatagenConfig
from ..utils.atomic import atomic_write_json

BAKED_VERSION = 1
ENGINES = ("dataset", "eevee", "cycles")


# ---------------------------------------------------------------------------------------------
# The texture (used by the Blender side)
# ---------------------------------------------------------------------------------------------


def projector_texture(rgba: np.ndarray, min_alpha: float = 1e-3) -> np.ndarray:
    """The input image as a base-colour texture ``[H, W, 3]`` in [0, 1] (scene-linear).

    ``rgba``: premultiplied HDR ``[H, W, 4]`` (the dataset's ``rgba``). Covered pixels (alpha >=
    ``min_alpha``) take the straight colour ``rgb / alpha`` clipped to [0, 1] (a base colour cannot
    exceed 1); background pixels take the mean of their covered neighbours, grown outward ring by
    ring (texture dilation), so that surfaces projecting just outside the silhouette do not turn
    black. An image with no covered pixel raises :class:`NearError`.
    """
    rgba = np.asarray(rgba, np.float64)
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise NearError(f"The baked baseline needs an RGBA input image [H, W, 4], got {rgba.shape}.")
    alpha = rgba[..., 3]
    valid = alpha >= min_alpha
    if not valid.any():
        raise NearError("The input image has no foreground pixel (alpha is 0 everywhere): nothing to bake.")
    colour = np.zeros(rgba.shape[:2] + (3,))
    colour[valid] = np.clip(rgba[..., :3][valid] / alpha[valid, None], 0.0, 1.0)
    while not valid.all():
        pad_c = np.pad(colour * valid[..., None], ((1, 1), (1, 1), (0, 0)))
        pad_v = np.pad(valid.astype(np.float64), 1)
        total = pad_c[:-2, 1:-1] + pad_c[2:, 1:-1] + pad_c[1:-1, :-2] + pad_c[1:-1, 2:]
        count = pad_v[:-2, 1:-1] + pad_v[2:, 1:-1] + pad_v[1:-1, :-2] + pad_v[1:-1, 2:]
        grow = ~valid & (count > 0)
        colour[grow] = total[grow] / count[grow, None]
        valid = valid | grow
    return colour.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Planning and running
# ---------------------------------------------------------------------------------------------


def render_config(dataset_config: dict[str, Any], engine: str = "dataset") -> DatagenConfig:
    """The render settings of the baked views: the dataset's (resolution, samples, denoising, seed),
    with ``engine`` replacing the dataset's engine unless it is ``"dataset"``."""
    if engine not in ENGINES:
        raise NearError(f"Unknown baked-baseline engine {engine!r}; use one of {', '.join(ENGINES)}.")
    cfg = DatagenConfig.from_dict(dataset_config.get("generation", dataset_config))
    return cfg if engine == "dataset" else dataclasses.replace(cfg, engine=engine)


def baked_path(root: Path, asset_id: str, input_index: int, target_file: str) -> Path:
    """Where the baked render of one (asset, input view, target view) lives under ``root``."""
    return root / asset_id / f"input{input_index:03d}" / target_file


@dataclasses.dataclass
class BakedRenders:
    """The baked-baseline renders of one evaluation (``R/baked``)."""

    root: Path
    dataset: Path
    config: DatagenConfig

    @classmethod
    def open(cls, out: Path, dataset: Path, dataset_config: dict[str, Any], engine: str) -> BakedRenders:
        """The cache folder ``out/baked``; emptied when its renders were made for another dataset
        or with other settings."""
        cfg = render_config(dataset_config, engine)
        root = Path(out) / "baked"
        settings = {
            "version": BAKED_VERSION,
            "dataset": str(Path(dataset).resolve()),
            "config": cfg.to_dict(),
        }
        stamp = root / "settings.json"
        try:
            same = json.loads(stamp.read_text()) == settings
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(stamp, settings)
        return cls(root, Path(dataset).resolve(), cfg)

    def path(self, asset_id: str, input_index: int, target_file: str) -> Path:
        return baked_path(self.root, asset_id, input_index, target_file)

    def job(self, assets: list[dict[str, Any]], items: list[tuple[str, int, Any, Any]]) -> dict[str, Any]:
        """The Blender job for the renders of ``items`` (asset id, input index, input record, target
        record) that are not on disk yet; ``assets`` are the assets' ``asset.json`` contents."""
        by_asset: dict[str, list[dict[str, Any]]] = {}
        for asset_id, index, inp, target in items:
            out = self.path(asset_id, index, target.file)
            if out.is_file():
                continue
            by_asset.setdefault(asset_id, []).append({
                "input_file": inp.file, "input_camera": inp.camera.to_dict(),
                "camera": target.camera.to_dict(), "lighting": target.lighting, "out": str(out),
            })  # fmt: skip
        meta = {a["id"]: a for a in assets}
        return {
            "version": BAKED_VERSION,
            "dataset": str(self.dataset),
            "config": self.config.to_dict(),
            "assets": [
                {
                    "id": a,
                    "source": meta[a]["source"],
                    "normalization": meta[a]["normalization"],
                    "items": its,
                }
                for a, its in by_asset.items()
            ],
        }

    def render(
        self, job: dict[str, Any], blender: str | None = None, progress: bool = True
    ) -> dict[str, str]:
        """Run the job in Blender (nothing when it is empty); returns ``{asset id: error}`` of the
        assets Blender could not rebuild (their baked rows are skipped with a note)."""
        n = sum(len(a["items"]) for a in job["assets"])
        if n == 0:
            return {}
        from ..utils.blender_job import blender_command, extension_script, find_blender, run_logged

        script = extension_script(
            "operators/datagen/headless.py", "Or leave out the baked baseline: --methods ours lambertian."
        )
        try:
            prefix = find_blender(blender)
        except NearError as e:
            raise NearError(
                f"{e} The baked baseline (a) renders in Blender; or pass --methods ours lambertian."
            ) from None
        job_path = self.root / "job.json"
        atomic_write_json(job_path, job)
        cmd = blender_command(prefix, script, ["baked", "--job", str(job_path), "--progress", "json"])
        failures: dict[str, str] = {}
        bar = _bar(n, progress)

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("event") == "render" and bar is not None:
                bar.update(1)
            elif ev.get("event") == "asset" and ev.get("status") == "failed":
                failures[ev["id"]] = ev["error"]
                if bar is not None:
                    bar.write(f"baked baseline: {ev['id']}: {ev['error']}")

        run_logged(cmd, on_event, "near eval baked", self.root / "blender.log", bar and bar.close)
        return failures

    def read(self, asset_id: str, input_index: int, target_file: str) -> np.ndarray | None:
        """Premultiplied HDR ``[H, W, 3]`` of one baked render, None when it was not rendered."""
        from ..data.views import read_view

        p = self.path(asset_id, input_index, target_file)
        if not p.is_file():
            return None
        try:
            return np.asarray(read_view(p)["rgba"][..., :3], np.float32)
        except Exception as e:
            raise NearError(
                f"Cannot read the baked render {p} ({e}); delete it and re-run `near eval`."
            ) from None


def _bar(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="near eval: baked baseline renders", unit="img", dynamic_ncols=True)
