"""The paper's four evaluation tasks (section 4, tables 1 and 3) on a ``near datagen`` dataset.

Every task compares premultiplied HDR renders with a ground-truth render of the dataset, after the
display transform of :mod:`near_blender.eval.scoring`
(:func:`~near_blender.render.tonemap.display_agx`, full frame). Targets and inputs come from the
per-asset sets of :mod:`near_blender.data.sampling`:

``gbuffer_forward``
    Stage 2 from the asset's ground-truth LH-SLAT (``slat_lh.npz``, plus ``slat_bc.npz`` when the
    model uses the base-colour SLAT) under each target view's environment, compared with that
    view. Targets: the ``relit_holdout`` views (held-out maps), or the ``relit`` views when the
    dataset has no held-out maps. Methods: ours, lambertian (the same G-buffers the task gives).
``random_lit_reconstruction``
    An input image (``inputs/``) -> stage 1 -> LH-SLAT -> stage 2 at the input camera under the
    input's own lighting; the ground truth is the input image itself. Inputs lit by a random
    environment map use it exactly. Inputs lit by area lights (the paper's six-light and
    hemisphere modes; the dataset has no environment render of them and no other render at the
    input camera under that light) use the area lights turned into an environment map as seen from
    the asset's centre (:mod:`near_blender.eval.lights`, a distant-light approximation); those rows
    carry ``"approx_light": true`` and the report counts them. Methods: ours, lambertian (base
    colour from an ``inputs_holdout`` render of the same camera, normal from the input view; none
    when the dataset has no held-out maps). The baked baseline would return the input unchanged, so
    it is not run.
``unknown_lit_relighting``
    The input image -> stage 1 -> relit under each held-out map at the input camera; ground truth:
    ``inputs_holdout`` (the input camera re-rendered under that map). Methods: ours, lambertian,
    baked, delit.
``novel_view_relighting``
    The same LH-SLAT rendered at the other cameras (``relit_holdout``: stage-2 cameras under the
    held-out maps, never the input camera). Methods: ours, lambertian, baked, delit.

Stage 1 runs once per input image with the geometry prior = the asset's surface voxels
(``mesh_voxels.npz``; the paper voxelizes a Hunyuan3D mesh, the dataset's own mesh is used here)
and a fixed seed; the first ``inputs`` input views of each asset are used (default 1, one image
per object). Scores are averaged over all evaluated images of a task (every asset x view x light).

Results are written per asset (``R/assets/<id>/result.json`` + ``examples.npz``, atomically), so an
interrupted run resumes where it stopped when the settings are unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .. import NearError, __version__
from ..data.dataset import NearDataset, ViewRecord
from ..render.envmap import Environment
from ..render.tonemap import display_agx as display
from ..render.tonemap import standard
from ..utils.atomic import atomic_path, atomic_write_json
from .baked import BakedRenders
from .baselines import delit_view, lambertian_view
from .irradiance import Irradiance
from .lights import lights_environment
from .results import (  # noqa: F401 - TASKS, METHODS, TASK_METHODS are part of this module's API
    METHODS,
    TASK_METHODS,
    TASKS,
    AssetResult,
    EvalConfig,
    Example,
    mean_or_none,
)
from .scoring import score

# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def select_assets(ds: NearDataset, cfg: EvalConfig) -> list[str]:
    """The asset ids to evaluate (``--assets``, else the split), at most ``limit``."""
    if cfg.assets:
        missing = [a for a in cfg.assets if a not in ds.asset_ids]
        if missing:
            shown = ", ".join(ds.asset_ids[:8]) + (" ..." if len(ds.asset_ids) > 8 else "")
            raise NearError(f"Asset(s) {missing} are not finished assets of {ds.root} (it has: {shown}).")
        ids = list(cfg.assets)
    elif cfg.split == "all":
        ids = list(ds.asset_ids)
    elif cfg.split == "heldout":
        ids = ds.split()[1]
        if not ids:
            raise NearError(
                f"{ds.root} has no held-out assets ({len(ds.asset_ids)} finished asset(s); the split "
                "needs two or more). Use --split all or name assets with --assets."
            )
    else:
        raise NearError(f"--split must be 'heldout' or 'all', got {cfg.split!r}.")
    if not ids:
        raise NearError(f"{ds.root} has no finished assets to evaluate.")
    return ids[: cfg.limit] if cfg.limit else ids


def _relight_targets(ds: NearDataset, asset_id: str) -> list[ViewRecord]:
    held = ds.views(asset_id, "relit_holdout")
    return held or ds.views(asset_id, "relit")


def plan_asset(ds: NearDataset, asset_id: str, cfg: EvalConfig) -> list[Example]:
    """Every image to evaluate for one asset, task by task."""
    out: list[Example] = []
    inputs = ds.views(asset_id, "inputs")[: max(cfg.inputs, 0)]
    for task in cfg.tasks:
        if task == "gbuffer_forward":
            out += [Example(task, asset_id, None, r) for r in _relight_targets(ds, asset_id)]
        elif task == "random_lit_reconstruction":
            out += [Example(task, asset_id, r.index, r) for r in inputs]
        elif task == "unknown_lit_relighting":
            held = ds.views(asset_id, "inputs_holdout")
            for r in inputs:
                out += [Example(task, asset_id, r.index, t) for t in held if t.meta.get("view") == r.index]
        elif task == "novel_view_relighting":
            targets = ds.views(asset_id, "relit_holdout")
            out += [Example(task, asset_id, r.index, t) for r in inputs for t in targets]
        else:
            raise NearError(f"Unknown task {task!r}; choose from {', '.join(TASKS)}.")
    return out


# ---------------------------------------------------------------------------------------------
# Evaluating one asset
# ---------------------------------------------------------------------------------------------


class AssetEvaluator:
    """Runs the methods of every example of one asset, caching stage 1 per input (the baked
    baseline's renders are made beforehand, for every asset at once: :func:`render_baked`)."""

    def __init__(
        self, ds: NearDataset, asset_id: str, cfg: EvalConfig, pipeline: Any | None,
        baked: BakedRenders | None = None, baked_error: str | None = None,
    ) -> None:  # fmt: skip
        self.ds, self.asset_id, self.cfg, self.pipeline = ds, asset_id, cfg, pipeline
        self.baked_renders, self.baked_error = baked, baked_error
        self._views: dict[str, dict[str, np.ndarray]] = {}
        self._lh: dict[int, np.ndarray] = {}
        self._delit: dict[int, np.ndarray] = {}
        self._irr: dict[tuple[str, float, float], Irradiance] = {}
        self.notes: set[str] = set()
        self._renderer: Any | None = None

    # -- data ------------------------------------------------------------------------------------
    def view(self, rec: ViewRecord) -> dict[str, np.ndarray]:
        if rec.file not in self._views:
            path = self.ds.asset_dir(rec.asset_id) / rec.file
            try:
                self._views[rec.file] = self.ds.read(rec)
            except NearError:
                raise
            except Exception as e:
                raise NearError(
                    f"Cannot read view file {path} ({e}); re-run `near datagen` for it."
                ) from None
        return self._views[rec.file]

    def input_record(self, index: int) -> ViewRecord:
        return next(r for r in self.ds.views(self.asset_id, "inputs") if r.index == index)

    @cached_property
    def prior_coords(self) -> np.ndarray:
        """Geometry-prior voxels [N, 3] (:meth:`NearDataset.prior_coords`), read once per asset."""
        return self.ds.prior_coords(self.asset_id)

    def gt_slat(self) -> tuple[np.ndarray, np.ndarray]:
        with_bc = bool(((self.pipeline.args.get("stage2") or {}) if self.pipeline else {}).get("use_bc_slat"))
        try:
            return self.ds.slat_features(self.asset_id, with_bc)
        except NearError:
            raise
        except Exception as e:
            raise NearError(f"{self.asset_id}: cannot read its SLAT files ({e}).") from None

    def environment(self, rec: ViewRecord) -> tuple[Environment, bool]:
        """(environment, approximated) of a view's lighting."""
        kind = rec.lighting.get("type")
        if kind == "envmap":
            try:
                return self.ds.environment(rec), False
            except NearError:
                raise
            except Exception as e:
                raise NearError(
                    f"Cannot read environment map {rec.envmap!r} of {self.ds.root} ({e})."
                ) from None
        if kind == "lights":
            return lights_environment(rec.lighting, name=f"{rec.asset_id}/{rec.file}"), True
        if kind == "uniform":
            c = np.asarray(rec.lighting.get("color", (1, 1, 1)), np.float32) * float(
                rec.lighting.get("strength", 1)
            )
            return Environment.uniform(c), False
        raise NearError(f"{rec.asset_id}/{rec.file}: unknown lighting {rec.lighting!r}.")

    def irradiance(self, env: Environment) -> Irradiance:
        key = (env.name, env.rotation_z, float(env.radiance.sum()))
        if key not in self._irr:
            self._irr[key] = Irradiance(env, self.cfg.irradiance_height)
        return self._irr[key]

    # -- methods ---------------------------------------------------------------------------------
    def lh_slat(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._lh:
            rec = self.input_record(index)
            rgba = self.view(rec)["rgba"]
            self._lh[index] = self.pipeline.image_to_slat(
                rgba, self.prior_coords, seed=self.cfg.seed + index, steps=self.cfg.steps,
                camera=(rec.camera.viewmat, rec.camera.K),
            )  # fmt: skip
        return self.prior_coords, self._lh[index]

    def ours(self, ex: Example, env: Environment) -> np.ndarray:
        from ..scene import PlacedAsset, SceneRenderer

        coords, feats = self.gt_slat() if ex.input is None else self.lh_slat(ex.input)
        if self._renderer is None:  # the cached real-time path: IAD once per SLAT (same images)
            self._renderer = SceneRenderer(self.pipeline, max_assets=4, max_lightings=4)
        key = (self.asset_id, "gt" if ex.input is None else f"input{ex.input}")
        out = self._renderer.render([PlacedAsset(key, coords, feats, np.eye(4))], ex.target.camera, env)
        return np.asarray(out["hdr"], np.float32)[..., :3]

    def lambertian(self, ex: Example, env: Environment) -> np.ndarray | None:
        target = self.view(ex.target)
        if ex.task == "random_lit_reconstruction":
            same_cam = [
                r for r in self.ds.views(self.asset_id, "inputs_holdout") if r.meta.get("view") == ex.input
            ]
            if not same_cam:
                self.notes.add(
                    "lambertian/random_lit_reconstruction needs inputs_holdout renders (base colour)"
                )
                return None
            base = self.view(same_cam[0])["base_color"]
            gbuf = {"base_color": base, "normal": target["normal"]}
            return lambertian_view(gbuf, env, self.irradiance(env))
        return lambertian_view(target, env, self.irradiance(env))

    @cached_property
    def prior_geometry(self) -> Any:
        from ..data.delighting import prior_geometry

        return prior_geometry(self.prior_coords)

    def delit_base_color(self, index: int) -> np.ndarray:
        """Per-voxel base colour ``[N, 3]`` of input ``index`` delit on the prior: the evaluated
        model's delighting calibration (base-colour channels) when it has one, else the delit
        colour at the image's own level."""
        if index not in self._delit:
            from ..data.delighting import calibrated_slat, delight_image

            rec = self.input_record(index)
            lit = delight_image(
                self.view(rec)["rgba"], rec.camera.viewmat, rec.camera.K, self.prior_coords,
                geometry=self.prior_geometry,
            )  # fmt: skip
            s1 = (self.pipeline.args.get("stage1") or {}) if self.pipeline is not None else {}
            cal = s1.get("calibration") if s1.get("method") == "delight" else None
            if cal is not None and len(cal["channels"]) == 16:
                self._delit[index] = calibrated_slat(lit, cal)[:, 8:11]
            else:
                self.notes.add(
                    "delit: no delighting calibration in the model; base colour at the image's level"
                )
                self._delit[index] = lit.albedo.astype(np.float32)
        return self._delit[index]

    def delit(self, ex: Example, env: Environment) -> np.ndarray | None:
        """The delit baseline (:func:`near_blender.eval.baselines.delit_view`)."""
        assert ex.input is not None
        bc = self.delit_base_color(ex.input)
        return delit_view(
            self.view(ex.target), ex.target.camera, self.prior_coords, bc, env, self.irradiance(env)
        )

    def baked(self, ex: Example, env: Environment) -> np.ndarray | None:
        """The Blender render of the baked asset (made before the asset's evaluation)."""
        assert ex.input is not None and self.baked_renders is not None
        img = self.baked_renders.read(self.asset_id, ex.input, ex.target.file)
        if img is None:
            self.notes.add(
                f"baked: {self.asset_id}: {self.baked_error or 'not rendered'}; its baked rows are missing"
            )
        return img

    def run(self, ex: Example, methods: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        """Rows (one per method) and the display images (input, gt, methods) of one example."""
        target = self.view(ex.target)
        light_rec = self.input_record(ex.input) if ex.task == "random_lit_reconstruction" else ex.target
        env, approx = self.environment(light_rec)
        gt = display(target["rgba"][..., :3])
        if ex.input is None:  # G-buffer task: show the base colour the renderer is given
            shown_input = np.asarray(standard(np.clip(target["base_color"], 0, 1)), np.float32)
        else:
            shown_input = display(self.view(self.input_record(ex.input))["rgba"][..., :3])
        images = {"input": shown_input, "gt": gt}
        rows = []
        for m in methods:
            if m not in TASK_METHODS[ex.task]:
                continue
            hdr = getattr(self, m)(ex, env)
            if hdr is None:
                continue
            pred = display(hdr)
            images[m] = pred
            rows.append({
                "task": ex.task, "method": m, "asset": ex.asset_id, "input": ex.input,
                "target": ex.target.file, "light": light_rec.lighting.get("envmap") or light_rec.lighting.get("mode"),
                "approx_light": approx, **score(pred, gt),
            })  # fmt: skip
        return rows, images


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _asset_files(out: Path, asset_id: str) -> tuple[Path, Path]:
    d = out / "assets" / asset_id
    return d / "result.json", d / "examples.npz"


def load_asset_result(out: Path, asset_id: str, fingerprint: str) -> AssetResult | None:
    """A finished asset's stored result when it was made with the same settings, else None."""
    res_path, ex_path = _asset_files(out, asset_id)
    try:
        data = json.loads(res_path.read_text())
        if data.get("fingerprint") != fingerprint:
            return None
        examples: dict[str, dict[str, np.ndarray]] = {}
        if ex_path.is_file():
            with np.load(ex_path) as z:
                for key in z.files:
                    task, col = key.split("/", 1)
                    examples.setdefault(task, {})[col] = z[key]
        return AssetResult(data["rows"], examples, list(data["notes"]), list(data["planned"]))
    except (OSError, ValueError, KeyError):
        return None


def save_asset_result(out: Path, asset_id: str, fingerprint: str, result: AssetResult) -> None:
    res_path, ex_path = _asset_files(out, asset_id)
    flat = {f"{t}/{c}": img for t, cols in result.examples.items() for c, img in cols.items()}
    with atomic_path(ex_path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **flat)
    atomic_write_json(
        res_path,
        {
            "fingerprint": fingerprint,
            "asset": asset_id,
            "rows": result.rows,
            "notes": result.notes,
            "planned": result.planned,
        },
    )


def load_pipeline(cfg: EvalConfig) -> Any | None:
    """The NeAR pipeline for method ``ours`` (None when ``ours`` is not evaluated)."""
    if "ours" not in cfg.methods:
        return None
    if not cfg.model:
        raise NearError("--model is required to evaluate 'ours' (or pass --methods lambertian baked).")
    from ..pipeline import NearPipeline

    p = Path(cfg.model)
    if not p.exists() and p.is_absolute():
        raise NearError(f"--model {cfg.model}: no such pipeline folder.")
    try:
        pipe = NearPipeline.from_pretrained(cfg.model, device=cfg.device)
    except NearError:
        raise
    except Exception as e:
        raise NearError(f"Cannot load the pipeline {cfg.model} ({type(e).__name__}: {e}).") from None
    needs_s1 = [t for t in cfg.tasks if t != "gbuffer_forward"]
    if needs_s1 and pipe.missing_stage1:
        raise NearError(
            f"The pipeline {cfg.model} has no stage 1 ({pipe.missing_stage1} missing), "
            f"which {', '.join(needs_s1)} need. Use --tasks gbuffer_forward or a full pipeline."
        )
    try:
        pipe.stage2()
    except NearError:
        raise
    except Exception as e:
        raise NearError(f"The pipeline {cfg.model} has no usable stage-2 models ({e}).") from None
    return pipe


def run_eval(cfg: EvalConfig, on_asset: Callable[[str, AssetResult], None] | None = None) -> dict[str, Any]:
    """Evaluate as configured (gradients off for the duration, restored afterwards)."""
    import torch

    with torch.no_grad():
        return _run_eval(cfg, on_asset)


def _run_eval(cfg: EvalConfig, on_asset: Callable[[str, AssetResult], None] | None = None) -> dict[str, Any]:
    """Evaluate, write ``R/metrics.json``, ``R/per_asset.jsonl``, ``R/report.md`` and the contact
    sheets ``R/<task>.png``; returns the metrics dict."""
    from .report import write_outputs

    for t in cfg.tasks:
        if t not in TASKS:
            raise NearError(f"Unknown task {t!r}; choose from {', '.join(TASKS)}.")
    for m in cfg.methods:
        if m not in METHODS:
            raise NearError(f"Unknown method {m!r}; choose from {', '.join(METHODS)}.")
    if cfg.inputs < 1:
        raise NearError("--inputs must be >= 1.")
    ds = NearDataset(cfg.data)
    ids = select_assets(ds, cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint()
    pipeline = load_pipeline(cfg)

    results: dict[str, AssetResult] = {}
    todo: list[tuple[str, list[Example]]] = []
    for a in ids:
        prev = load_asset_result(out, a, fp) if cfg.resume else None
        if prev is not None:
            results[a] = prev
            continue
        try:
            todo.append((a, plan_asset(ds, a, cfg)))
        except (OSError, ValueError, KeyError) as e:
            raise NearError(
                f"{a}: cannot read its cameras/lights ({e}); the asset folder is incomplete."
            ) from None
    total = sum(len(p) for _, p in todo)
    baked, baked_errors = render_baked(ds, cfg, out, todo)
    notes: set[str] = set()
    planned = {ex.task for _, plan in todo for ex in plan} | {
        t for res in results.values() for t in res.planned
    }
    for task in cfg.tasks:
        if task not in planned:
            why = (
                "the assets have no input views"
                if task == "random_lit_reconstruction"
                else "the dataset has no held-out environment maps (make it with `near datagen --holdout-envmaps ...`)"
                if task in ("unknown_lit_relighting", "novel_view_relighting")
                else "the assets have no relit views"
            )
            notes.add(f"{task}: nothing to evaluate, {why}.")
    from tqdm import tqdm

    with tqdm(total=total, desc="near eval", unit="img", disable=not cfg.progress) as bar:
        for a, plan in todo:
            ev = AssetEvaluator(ds, a, cfg, pipeline, baked, baked_errors.get(a))
            res = AssetResult(planned=sorted({ex.task for ex in plan}))
            for ex in plan:
                bar.set_postfix_str(f"{a[:24]} {ex.task}")
                rows, images = ev.run(ex, cfg.methods)
                res.rows += rows
                res.examples.setdefault(ex.task, images)
                bar.update(1)
            res.notes = sorted(ev.notes)
            save_asset_result(out, a, fp, res)
            results[a] = res
            if on_asset is not None:
                on_asset(a, res)
    for res in results.values():
        notes |= set(res.notes)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
    settings.update(fingerprint=fp, near_blender=__version__, assets=ids)
    return write_outputs(out, cfg, ids, results, settings, sorted(notes))


def render_baked(
    ds: NearDataset, cfg: EvalConfig, out: Path, todo: list[tuple[str, list[Example]]]
) -> tuple[BakedRenders | None, dict[str, str]]:
    """Render the baked baseline's missing images in Blender (one job for every asset); returns the
    renders and ``{asset: error}`` of the assets Blender could not rebuild."""
    if "baked" not in cfg.methods:
        return None, {}
    renders = BakedRenders.open(out, ds.root, ds.config, cfg.baked_engine)
    items, assets = [], []
    for a, plan in todo:
        wanted = [ex for ex in plan if "baked" in TASK_METHODS[ex.task] and ex.input is not None]
        if not wanted:
            continue
        try:
            assets.append(json.loads((ds.asset_dir(a) / "asset.json").read_text()))
        except (OSError, ValueError) as e:
            raise NearError(f"{a}: cannot read its asset.json ({e}); re-run `near datagen` for it.") from None
        inputs = {r.index: r for r in ds.views(a, "inputs")}
        items += [(a, ex.input, inputs[ex.input], ex.target) for ex in wanted]
    return renders, renders.render(renders.job(assets, items), cfg.blender, cfg.progress)
