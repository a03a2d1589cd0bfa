"""``near bench coverage``: resolution independence of the default model's renders (issue 16).

For every held-out asset of the dataset (the pipeline's ``args.stage2.held_out_assets``; views
``relit_holdout``), the asset's ground-truth LH-SLAT (``NearDataset.slat_features``, with the
base-colour channels when the model reads them) is rendered at 64², 256² and 512² of every view's
camera, with the representation options of each variant (published behaviour, ``min_scale`` off;
the previous shipped model's; the shipped :data:`~near_blender.eval.coverage.COVERAGE_OPTIONS`), and its alpha coverage is
compared with the voxel silhouette (:mod:`near_blender.eval.coverage`) and with the object's own
silhouette (the ground-truth render's alpha; the voxel shell's is 5-10% larger). The PSNR is the view's at
its own size (as ``tests/test_default_model.py`` scores it).

Without the dataset (``data/default`` is made by ``make default-model``) the held-out fixture
``tests/fixtures/default_heldout.npz`` is measured instead, and the summary says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..eval.coverage import COVERAGE_OPTIONS, PREVIOUS_OPTIONS, CoverageView, measure_coverage


def describe(options: dict[str, Any]) -> str:
    """A variant's name: its options as ``key=value, ...``."""
    return ", ".join(f"{k}={v}" for k, v in options.items())


# variant name -> representation options set on the shipped renderer before measuring
VARIANTS: dict[str, dict[str, Any]] = {
    "published (min_scale=0)": {"min_scale": 0.0, "pixel_filter": 0.3},
    describe(PREVIOUS_OPTIONS): dict(PREVIOUS_OPTIONS),
    describe(COVERAGE_OPTIONS): dict(COVERAGE_OPTIONS),
}
# one asset to measure: (asset id, coords [N, 3] int, feats [N, C], its views)
AssetViews = tuple[str, np.ndarray, np.ndarray, list[CoverageView]]
TOLERANCE = 0.05  # target: coverage within 5% (relative) of the object's silhouette


def fixture_assets(path: str | Path) -> Iterator[AssetViews]:
    """The held-out fixture (``write_heldout_fixture``'s ``.npz``) as one ``(asset id, coords [N, 3],
    feats [N, C], views)``."""
    from ..render.camera import Camera
    from ..render.envmap import Environment

    fx = np.load(path)
    env = Environment(fx["env"], name=str(fx["envmap"]))
    views = []
    for i in range(len([k for k in fx.files if k.startswith("rgba_")])):
        rgba = fx[f"rgba_{i}"]
        cam = Camera(fx[f"viewmat_{i}"], fx[f"K_{i}"], rgba.shape[1], rgba.shape[0])
        e = env.with_rotation(float(fx[f"rotation_z_{i}"])).scaled(float(fx[f"strength_{i}"]))
        views.append(CoverageView(cam, e, rgba))
    yield str(fx["asset"]), fx["coords"], fx["feats"], views


def dataset_assets(data: str | Path, pipe: Any, max_views: int | None = None) -> Iterator[AssetViews]:
    """Every held-out asset of the pipeline (``args.stage2.held_out_assets``) found in the dataset
    ``data``: ``(asset id, coords [N, 3], feats [N, C], views)`` with its ``relit_holdout`` views
    (the first ``max_views`` when given)."""
    from ..data.dataset import NearDataset

    ds = NearDataset(data)
    s2 = pipe.args.get("stage2") or {}
    with_bc = bool(s2.get("use_bc_slat"))
    for asset in s2.get("held_out_assets", []):
        if asset not in ds.asset_ids:
            continue
        recs = ds.views(asset, "relit_holdout")[:max_views]
        if not recs:
            continue
        coords, feats = ds.slat_features(asset, with_bc)
        views = [CoverageView(r.camera, ds.environment(r), ds.read(r)["rgba"]) for r in recs]
        yield asset, coords, feats, views


COLUMNS = ["asset", "variant", "size", "views", "coverage", "silhouette", "ratio", "min ratio",
           "max ratio", "object", "ratio to object", "interior alpha", "alpha outside",
           "PSNR (dB, own size)", "raster s"]  # fmt: skip


def _row(asset: str, name: str, size: int, at: list[dict[str, Any]]) -> list[Any]:
    """One table row: the means over a (asset, variant, size)'s views ``at``."""

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in at]))

    ratios = [r["ratio"] for r in at]
    psnrs = [r["psnr"] for r in at if "psnr" in r]
    objects = [r for r in at if "object" in r]
    obj = [float(np.mean([r[k] for r in objects])) if objects else "" for k in ("object", "object_ratio")]
    return [asset, name, size, len(at), mean("coverage"), mean("silhouette"), mean("ratio"),
            min(ratios), max(ratios), *obj, mean("interior"), mean("outside"),
            float(np.mean(psnrs)) if psnrs else "", mean("seconds")]  # fmt: skip


def _verdict(ratios: Sequence[float]) -> str:
    ok = 1 - TOLERANCE <= min(ratios) and max(ratios) <= 1 + TOLERANCE
    return "within the target" if ok else "outside the target"


def _assets_within(rows: list[list[Any]], variant: str, n_sizes: int) -> tuple[int, int] | None:
    """(assets whose mean coverage / object silhouette is within the tolerance at all ``n_sizes``
    sizes, assets measured) for one variant, from the table rows; None without object silhouettes."""
    at = COLUMNS.index("ratio to object")
    by_asset: dict[str, list[float]] = {}
    for row in rows:
        if row[1] == variant and row[at] != "":
            by_asset.setdefault(row[0], []).append(float(row[at]))
    if not by_asset:
        return None
    ok = sum(len(r) == n_sizes and all(abs(x - 1) <= TOLERANCE for x in r) for r in by_asset.values())
    return ok, len(by_asset)


def coverage_report(
    pipe: Any,
    assets: Iterable[AssetViews],
    sizes: Sequence[int] = (64, 256, 512),
    variants: dict[str, dict[str, Any]] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """The benchmark report (``near_blender.bench`` format) of ``assets`` rendered by ``pipe``
    under each variant's representation options (the renderer's own are restored afterwards): one
    table row per (asset, variant, size), means over the asset's views; the summary gives each
    (variant, size)'s range of coverage / silhouette over every view and the mean PSNR."""
    variants = VARIANTS if variants is None else variants
    renderer = pipe.models["renderer"]
    saved: dict[str, Any] = {}
    rows: list[list[Any]] = []
    ratios: dict[tuple[str, int], list[float]] = {}
    object_ratios: dict[tuple[str, int], list[float]] = {}
    psnrs: dict[str, list[float]] = {}
    try:
        for asset, coords, feats, views in assets:
            for name, options in variants.items():
                for k, v in renderer.update_representation(**options).items():
                    saved.setdefault(k, v)
                measured = measure_coverage(pipe, coords, feats, views, sizes)
                psnrs.setdefault(name, []).extend(r["psnr"] for r in measured if "psnr" in r)
                for size in sizes:
                    at = [r for r in measured if r["size"] == size]
                    ratios.setdefault((name, size), []).extend(r["ratio"] for r in at)
                    object_ratios.setdefault((name, size), []).extend(
                        r["object_ratio"] for r in at if "object_ratio" in r
                    )
                    rows.append(_row(asset, name, size, at))
    finally:
        renderer.update_representation(**saved)
    summary = [f"Source: {source}."] if source else []
    summary.append(
        f"Target: coverage / the object's own silhouette (the ground-truth render's alpha: the mesh "
        f"prior's true silhouette) within ±{TOLERANCE:.0%} at every size. Coverage / the voxel "
        "shell's silhouette is given beside it (the shell is 2-10% wider than the object it holds)."
    )
    if not rows:
        summary.append("No held-out asset with views was found: nothing measured.")
    for (name, size), r in object_ratios.items():
        if r:
            summary.append(
                f"{name}, {size}²: coverage / the object's silhouette {min(r):.3f} to {max(r):.3f} over "
                f"{len(r)} views, median {np.median(r):.3f} ({_verdict(r)})."
            )
    for (name, size), r in ratios.items():
        summary.append(
            f"{name}, {size}²: coverage / the voxel silhouette {min(r):.3f} to {max(r):.3f} over "
            f"{len(r)} views ({_verdict(r)})."
        )
    for name in variants:
        per_asset = _assets_within(rows, name, len(sizes))
        if per_asset is not None:
            summary.append(
                f"{name}: {per_asset[0]} of {per_asset[1]} assets within ±{TOLERANCE:.0%} of the object's "
                "silhouette at every size (means over each asset's views)."
            )
    for name, p in psnrs.items():
        if p:
            summary.append(
                f"{name}: PSNR at the views' own size {np.mean(p):.2f} dB (mean of {len(p)} views)."
            )
    return {
        "title": "Resolution independence: alpha coverage vs the object's and the voxels' silhouettes",
        "summary": summary,
        "tables": [
            {"name": "Coverage per held-out asset (means over its views)", "columns": COLUMNS, "rows": rows}
        ],
        "meta": {"sizes": list(sizes), "variants": {k: dict(v) for k, v in variants.items()}},
    }


def run(
    quick: bool = False,
    data: str | Path | None = None,
    model: str | Path | None = None,
    fixture: str | Path | None = None,
) -> dict[str, Any]:
    """Measure the default model (``model``: a pipeline folder; default: the bundled one) on the
    held-out assets of ``data`` (default ``data/default``), or on ``fixture`` when that dataset
    is missing. ``quick``: 64² and 256² only, at most 2 views per asset."""
    from ..data.dataset import NearDataset
    from ..pipeline import NearPipeline
    from ..train.default_model import DATA, REPO, bundled_folder

    pipe = NearPipeline.from_pretrained(model or bundled_folder())
    sizes = (64, 256) if quick else (64, 256, 512)
    data = Path(data) if data is not None else REPO / DATA
    held = (pipe.args.get("stage2") or {}).get("held_out_assets", [])
    if (data / "manifest.jsonl").is_file() and set(held) & set(NearDataset(data).asset_ids):
        assets: Iterable[AssetViews] = dataset_assets(data, pipe, 2 if quick else None)
        source = f"held-out assets of {data} (relit_holdout views)"
    else:
        fixture = (
            Path(fixture) if fixture is not None else REPO / "tests" / "fixtures" / "default_heldout.npz"
        )
        assets = fixture_assets(fixture)
        source = f"no held-out asset in {data}: the held-out fixture {fixture.name} (one asset, its views)"
    report = coverage_report(pipe, assets, sizes, source=source)
    report["meta"]["command"] = "python -m near_blender.cli bench coverage" + (" --quick" if quick else "")
    return report
