"""Stage-2 training (paper 3.5 and A.2): tokenizer + IAD + LAD + heads + radiance MLP, jointly, on
(LH-SLAT [+ base-colour SLAT], camera, environment) -> relit HDR image and G-buffers.

Input SLAT features are the dataset's 8-channel LH-SLAT, concatenated with the base-colour SLAT
when ``use_bc_slat`` is set (the paper's best variant, table 3), and standardized with per-channel
statistics measured on the training assets (stored with the model as ``slat_normalization``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import NearError
from ..data.dataset import AnyDataset, Stage2Views, ViewRecord, open_dataset
from ..models.radiance_mlp import GLOSSY_PRIORS
from ..models.relightable import MODEL_NAMES, RelightableDecoder, stage2_configs
from ..render.camera import stack_cameras
from ..render.conditioning import CONDITIONING, EnvConditioning
from ..render.tonemap import tonemap_torch
from ..sparse import SparseTensor
from ..utils.config_file import read_config_file
from .losses import Stage2Loss, Stage2Weights, l1
from .trainer import ItemRandom, TrainConfig, Trainer


@dataclass
class Stage2Config:
    data: str | list[str] = "data/default"  # a dataset folder, or several read as one
    out: str = "runs/stage2"
    model: str = "near-tiny"
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    use_bc_slat: bool = True
    held_out_fraction: float = 0.2
    env_height: int = 32  # conditioning map height (width = 2x); multiples of 32 for the tokenizer
    alpha_weight: float = 1.0  # extra L1 on the silhouette (0 = the paper's objective exactly)
    # the same L1 on the base (intrinsic-scale) pass's silhouette: the PBR losses are masked to the
    # object, so without it nothing stops the base scales from growing into streaks outside it
    base_alpha_weight: float = 0.0
    # L1 between every Gaussian's base colour and its voxel's base colour in the input base-colour
    # SLAT (channels 0-2 of ``slat_bc``; needs use_bc_slat): a direct 3D target per Gaussian, where
    # the rendered PBR loss only constrains colours averaged over a pixel's footprint
    voxel_base_color_weight: float = 0.0
    # (1 - cos) between the rendered normal pass and the ground-truth normals, on covered pixels:
    # the Gaussians' normals (shortest light-scale axis) are otherwise unsupervised, and the
    # diffuse shading prior reads them
    normal_weight: float = 0.0
    # each Gaussian's base colour = its voxel's colour in the input base-colour SLAT + the head's
    # residual (renderer option ``base_color_skip``; needs use_bc_slat): the small model no longer has
    # to learn to copy the colour through the decoder, only to correct it
    base_color_skip: bool = False
    # coupled training: a folder of stage-1 outputs for the training assets
    # (``near train stage1-samples``); each view's input SLAT is one of its asset's stage-1 samples
    # with probability ``stage1_sample_prob``, else the ground truth. The targets stay the ground
    # truth, so the renderer learns to render through stage 1's errors.
    stage1_samples: str | list[str] | None = None  # a folder, or one per dataset
    stage1_sample_prob: float = 0.5
    weights: dict[str, float] = field(default_factory=dict)  # Stage2Weights overrides
    # a stage-2 export (``<run>/model``) whose weights start a new run (fine-tuning); see init_weights
    init_from: str | None = None
    # the stage-2 models that train (names from MODEL_NAMES); the others keep their (init_from)
    # weights, e.g. ["neural_basis"] refits only the radiance MLP's residual after a prior switch
    trainable: list[str] | None = None
    # after training, fit the radiance MLP's glossy_weight on the training assets (pbr priors;
    # :mod:`near_blender.train.glossy_fit`), store it in the exported model, report in glossy_fit.json
    fit_glossy_weight: bool = False
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields

    @classmethod
    def from_file(cls, path: str | Path) -> Stage2Config:
        d = read_config_file(path)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise NearError(f"{path}: unknown stage-2 option(s) {unknown}.")
        return cls(**d)


def slat_channels(ds: AnyDataset, asset_id: str, use_bc: bool) -> tuple[np.ndarray, np.ndarray]:
    return ds.slat_features(asset_id, use_bc)


def measure_normalization(ds: AnyDataset, asset_ids: list[str], use_bc: bool) -> dict[str, list[float]]:
    """Per-channel mean/std of the SLAT features over all voxels of the training assets."""
    feats = np.concatenate([slat_channels(ds, a, use_bc)[1] for a in asset_ids], axis=0).astype(np.float64)
    std = feats.std(axis=0)
    return {"mean": feats.mean(axis=0).tolist(), "std": np.where(std < 1e-6, 1.0, std).tolist()}


def batch_slat(items: list[tuple[np.ndarray, np.ndarray]], norm: dict[str, list[float]]) -> SparseTensor:
    """Stack per-item (coords, feats) into one SparseTensor (coords b,x,y,z), features standardized."""
    mean = np.asarray(norm["mean"], np.float32)
    std = np.asarray(norm["std"], np.float32)
    coords, feats = [], []
    for b, (c, f) in enumerate(items):
        coords.append(np.concatenate([np.full((len(c), 1), b, np.int32), c.astype(np.int32)], axis=1))
        feats.append((f - mean) / std)
    return SparseTensor(
        feats=torch.from_numpy(np.concatenate(feats).astype(np.float32)),
        coords=torch.from_numpy(np.concatenate(coords)),
    )


class ConditioningCache:
    """One :class:`EnvConditioning` per environment map name (camera-independent parts)."""

    def __init__(self, ds: AnyDataset, height: int) -> None:
        self.ds, self.height = ds, height
        self._by_name: dict[str, EnvConditioning] = {}

    def maps(self, envmap: str, rotation_z: float, viewmat: np.ndarray) -> torch.Tensor:
        """``[9, H, W]`` tokenizer input for a map, its Mapping rotation and a camera."""
        if envmap not in self._by_name:
            self._by_name[envmap] = EnvConditioning(self.ds.envmap(envmap), self.height)
        return self._by_name[envmap](viewmat, rotation_z).stacked()


def collate_stage2(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


class Stage2Step:
    """The step function: build inputs for a batch of views, run the stack, compute the losses."""

    def __init__(self, ds: AnyDataset, cfg: Stage2Config, norm: dict[str, list[float]]) -> None:
        self.ds, self.cfg, self.norm = ds, cfg, norm
        self.cond = ConditioningCache(ds, cfg.env_height)
        self.loss = Stage2Loss(
            tonemap=lambda x: tonemap_torch(x.clamp_min(0.0)), weights=Stage2Weights(**cfg.weights)
        )
        self.samples = None
        if cfg.stage1_samples:
            from .stage1_samples import Stage1Samples

            self.samples = Stage1Samples(cfg.stage1_samples)

    def choose_slats(
        self, recs: list[ViewRecord], rand: ItemRandom | None
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]], bool]:
        """(input SLATs, ground-truth SLATs, whether any input is a stage-1 sample) of a batch's views:
        with ``stage1_samples``, item i reads one of its asset's samples when its first random
        number is below ``stage1_sample_prob`` (its second picks which)."""
        gt_items = [slat_channels(self.ds, r.asset_id, self.cfg.use_bc_slat) for r in recs]
        in_items, swapped = list(gt_items), False
        if self.samples is None or rand is None:
            return in_items, gt_items, swapped
        draws = rand.rand(2)  # [B, 2]
        for i, (r, (c, f)) in enumerate(zip(recs, gt_items, strict=True)):
            if float(draws[i, 0]) >= self.cfg.stage1_sample_prob:
                continue
            sample = self.samples.read(r.asset_id, float(draws[i, 1]), c)
            if sample is None:
                continue
            if sample.shape != f.shape:
                raise NearError(
                    f"The stage-1 sample of {r.asset_id} has {sample.shape[1]} channels, the ground truth "
                    f"{f.shape[1]}; make the samples with a model of the same SLAT layout (use_bc_slat)."
                )
            in_items[i], swapped = (c, sample), True
        return in_items, gt_items, swapped

    def inputs(self, items: list[dict[str, Any]], rand: ItemRandom | None = None) -> dict[str, Any]:
        """Model inputs of a batch: ``slat`` (what the model reads) and ``slat_gt`` (the ground
        truth; differs from ``slat`` where a stage-1 sample stood in for it)."""
        recs = [it["record"] for it in items]
        in_items, gt_items, swapped = self.choose_slats(recs, rand)
        slat = batch_slat(in_items, self.norm)
        slat_gt = batch_slat(gt_items, self.norm) if swapped else slat
        env = torch.stack(
            [
                self.cond.maps(r.envmap, float(r.lighting.get("rotation_z", 0.0)), r.camera.viewmat)
                for r in recs
            ]
        )
        viewmats, Ks = stack_cameras([r.camera for r in recs])
        W, H = recs[0].camera.width, recs[0].camera.height
        return {
            "slat": slat, "slat_gt": slat_gt, "env": env, "viewmats": viewmats, "Ks": Ks, "width": W, "height": H,
        }  # fmt: skip

    def targets(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        keys = items[0]["targets"].keys()
        return {k: torch.from_numpy(np.stack([it["targets"][k] for it in items])).float() for k in keys}

    def __call__(
        self, model: torch.nn.Module, items: list[dict[str, Any]], rand: ItemRandom
    ) -> dict[str, Any]:
        x = self.inputs(items, rand)  # rand only picks stage-1 samples (coupled training)
        out = model(
            x["slat"], x["env"], x["viewmats"], x["Ks"], x["width"], x["height"], return_gaussians=True
        )
        gt = self.targets(items)
        g = out.pop("gaussians")
        pred = {k: out[k] for k in ("hdr", "base_color", "roughness", "metallic", "shadow") if k in out}
        if g is not None:
            pred.update(scales=g.scales, light_scales=g.light_scales, opacities=g.opacities)
        gt_l = {"hdr": gt["hdr"], "mask": gt["alpha"]}
        for k in ("base_color", "roughness", "metallic"):
            if k in gt:
                gt_l[k] = gt[k]
        losses = self.loss(pred, gt_l)
        if "shadow" in gt and "shadow" in out:
            # shadow is defined where shadow_weight = 1 (lit, non-metal interior pixels)
            losses["shadow"] = l1(out["shadow"], gt["shadow"], gt["shadow_weight"])
            losses["total"] = losses["total"] + self.loss.w.shadow * losses["shadow"]
        if self.cfg.alpha_weight:
            losses["alpha_l1"] = l1(out["alpha"], gt["alpha"])
            losses["total"] = losses["total"] + self.cfg.alpha_weight * losses["alpha_l1"]
        if self.cfg.normal_weight and "normal" in gt and "normal" in out:
            losses["normal"] = normal_cosine_loss(out["normal"], gt["normal"], gt["alpha"])
            losses["total"] = losses["total"] + self.cfg.normal_weight * losses["normal"]
        if self.cfg.voxel_base_color_weight:
            losses["voxel_base_color"] = voxel_base_color_l1(g, x["slat_gt"], self.norm)
            losses["total"] = losses["total"] + self.cfg.voxel_base_color_weight * losses["voxel_base_color"]
        if self.cfg.base_alpha_weight and "alpha_base" in out:
            losses["alpha_base_l1"] = l1(out["alpha_base"], gt["alpha"])
            losses["total"] = losses["total"] + self.cfg.base_alpha_weight * losses["alpha_base_l1"]
        return losses


def normal_cosine_loss(pred: torch.Tensor, gt: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between normal maps ``[B, H, W, 3]`` over pixels with ``alpha > 0.5``
    (``pred`` as rendered: unit or 0; ``gt`` may be premultiplied: both are normalized)."""
    w = (alpha[..., 0] > 0.5).to(pred.dtype)
    cos = (torch.nn.functional.normalize(pred, dim=-1) * torch.nn.functional.normalize(gt, dim=-1)).sum(-1)
    return ((1.0 - cos) * w).sum() / w.sum().clamp_min(1.0)


LH_CHANNELS = 8  # the LH-SLAT's channels; the base-colour SLAT's colour follows at 8-10
NORMAL_CHANNELS = (3, 4, 5)  # the voxel's mean surface normal in the LH-SLAT (data.features)


def voxel_base_color_l1(g: Any, slat: SparseTensor, norm: dict[str, list[float]]) -> torch.Tensor:
    """Mean L1 between the Gaussians' base colours ``[N*K, 3]`` (voxel-major) and their voxels'
    base colour from the input SLAT (``slat.feats`` standardized with ``norm``, 16 channels)."""
    feats = slat.feats
    if feats.shape[1] < LH_CHANNELS + 3:
        raise NearError(
            "voxel_base_color_weight needs the base-colour SLAT in the input (use_bc_slat: true)."
        )
    N, M = feats.shape[0], g.base_color.shape[0]
    if M % N:
        raise NearError(f"{M} Gaussians do not split evenly over {N} voxels.")
    K = M // N
    mean = torch.as_tensor(norm["mean"], dtype=feats.dtype)[LH_CHANNELS : LH_CHANNELS + 3]
    std = torch.as_tensor(norm["std"], dtype=feats.dtype)[LH_CHANNELS : LH_CHANNELS + 3]
    target = (feats[:, LH_CHANNELS : LH_CHANNELS + 3] * std + mean).clamp(0.0, 1.0)
    centres = (slat.coords[:, 1:].to(g.means.dtype) + 0.5) / 64.0 - 0.5
    if float((g.means.detach().view(N, K, 3) - centres[:, None]).abs().amax()) > 1.5 / 64.0:
        raise NearError("The Gaussians are not in the input SLAT's voxel order; cannot pair colours.")
    return (g.base_color.view(N, K, 3) - target[:, None]).abs().mean()


def build_model(cfg: Stage2Config, norm: dict[str, list[float]]) -> RelightableDecoder:
    """The stage-2 stack for the config, reading SLATs standardized with ``norm``; its initial
    weights follow the training seed (``cfg.train["seed"]``), so two fresh runs start alike."""
    torch.manual_seed(int(cfg.train.get("seed", 0)))
    latent_channels = len(norm["mean"])
    overrides = {k: dict(v) for k, v in cfg.model_overrides.items()}
    overrides.setdefault("decoder", {})["latent_channels"] = latent_channels
    if cfg.base_color_skip:
        if not cfg.use_bc_slat or latent_channels < LH_CHANNELS + 3:
            raise NearError("base_color_skip needs the base-colour SLAT in the input (use_bc_slat: true).")
        ch = range(LH_CHANNELS, LH_CHANNELS + 3)
        overrides.setdefault("renderer", {})["base_color_skip"] = _channel_spec(ch, norm)
    rep = overrides.get("renderer", {}).get("representation_config", {})
    if rep.get("normal_source") == "features":  # the renderer reads the LH-SLAT's normal channels
        overrides["renderer"]["feature_normals"] = _channel_spec(NORMAL_CHANNELS, norm)
    return RelightableDecoder.from_configs(stage2_configs(cfg.model, **overrides))


def _channel_spec(channels: Sequence[int], norm: dict[str, list[float]]) -> dict[str, list[Any]]:
    """``{"channels", "mean", "std"}`` of SLAT ``channels`` under the standardization ``norm``."""
    return {
        "channels": list(channels),
        "mean": [norm["mean"][c] for c in channels],
        "std": [norm["std"][c] for c in channels],
    }


def read_init_source(folder: str) -> Any:
    """The :class:`~near_blender.pipeline.NearPipeline` export named by ``init_from``."""
    from ..pipeline import NearPipeline

    path = Path(folder)
    if not (path / "pipeline.json").is_file():
        raise NearError(
            f"init_from: {folder} is not a stage-2 export (no pipeline.json); train the run it names "
            "first (its `<out>/model` folder), or remove init_from to start from random weights."
        )
    pipe = NearPipeline.from_pretrained(path)
    if "stage2" not in pipe.args or any(k not in pipe.models for k in MODEL_NAMES):
        raise NearError(f"init_from: {folder} holds no stage-2 models ({list(MODEL_NAMES)}).")
    return pipe


def init_weights(model: RelightableDecoder, source: Any, name: str) -> None:
    """Copy the four stage-2 models' weights from ``source`` into ``model`` (shapes must match).

    When ``model``'s shading prior differs from the source's (other than "diffuse" <->
    "diffuse_all"), the radiance MLP's last layer is zeroed for the RGB outputs, so the run starts from the source's geometry, materials
    and shadows with radiance = the diffuse term alone (the MLP then learns the residual).
    Likewise, when ``model`` adds ``base_color_skip``, the heads' base-colour outputs are zeroed so
    that the run starts from the voxels' colours.
    """
    from ..models.checkpoint import load_weights

    for k in MODEL_NAMES:
        load_weights(getattr(model, k), source.models[k].state_dict(), strict=True, source=name)
    before = getattr(source.models["neural_basis"], "shading_prior", "none")
    # between the two diffuse priors the residual stays: only the metals' diffuse term changes
    if model.shading_prior != before and {before, model.shading_prior} != {"diffuse", "diffuse_all"}:
        last = [m for m in model.neural_basis.mlp if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight[:3].zero_()
            last.bias[:3].zero_()
    if model.renderer.base_color_skip and not getattr(source.models["renderer"], "base_color_skip", None):
        K = model.renderer.layout.num_gaussians
        last = model.renderer.gs_out_layer[-1]
        with torch.no_grad():  # rows of "_base_color": after the 3K offset rows (GaussianLayout order)
            last.weight[3 * K : 6 * K].zero_()
            last.bias[3 * K : 6 * K].zero_()


def export_stage2(model: RelightableDecoder, folder: Path, extra_args: dict[str, Any]) -> None:
    """Write the four models + ``pipeline.json`` (published names) into ``folder``."""
    from ..pipeline import NearPipeline

    pipe = NearPipeline(models=model.stage2_models(), args=dict(extra_args), name="NearPipeline")
    pipe.save_pretrained(folder)


def train_stage2(cfg: Stage2Config, progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Train (or resume) stage 2 as configured; returns the last losses and where the model is."""
    ds = open_dataset(cfg.data)
    train_ids, test_ids = ds.split(cfg.held_out_fraction)
    if not train_ids:
        raise NearError(f"No training assets in {ds.label}.")
    out = Path(cfg.out)
    norm_path = out / "slat_normalization.json"
    source = read_init_source(cfg.init_from) if cfg.init_from else None
    if norm_path.is_file():
        norm = json.loads(norm_path.read_text())
    else:
        from ..utils.atomic import atomic_write_json

        if source is not None:  # the inputs must be normalized as the initial weights expect
            norm = source.args["stage2"]["slat_normalization"]
        else:
            norm = measure_normalization(ds, train_ids, cfg.use_bc_slat)
        atomic_write_json(norm_path, norm)
    model = build_model(cfg, norm)
    if cfg.fit_glossy_weight and model.shading_prior not in GLOSSY_PRIORS:
        raise NearError(
            f"fit_glossy_weight needs a glossy shading prior {GLOSSY_PRIORS}, but this run's is "
            f"{model.shading_prior!r}: set model_overrides.neural_basis.shading_prior, or drop fit_glossy_weight."
        )
    if source is not None:
        init_weights(model, source, cfg.init_from or "")
    if cfg.trainable is not None:
        unknown = sorted(set(cfg.trainable) - set(MODEL_NAMES))
        if unknown or not cfg.trainable:
            raise NearError(
                f"trainable: {unknown or 'an empty list'} -- name one or more of {list(MODEL_NAMES)}, "
                "or leave it out to train them all."
            )
        for k in MODEL_NAMES:
            getattr(model, k).requires_grad_(k in cfg.trainable)
    data = Stage2Views(ds, train_ids, "relit")
    step = Stage2Step(ds, cfg, norm)
    tcfg = TrainConfig.from_dict(cfg.train)
    extra = {
        "stage2": {
            "slat_normalization": norm,
            "use_bc_slat": cfg.use_bc_slat,
            "env_height": cfg.env_height,
            "conditioning": dict(CONDITIONING),
            "model": cfg.model,
            "train_assets": train_ids,
            "held_out_assets": test_ids,
            "held_out_envmaps": ds.holdout_envmaps,
            "dataset": cfg.data if isinstance(cfg.data, list) else str(cfg.data),
        },
        "config": asdict(cfg),
    }
    trainer = Trainer(
        model, data, step, tcfg, out, collate=collate_stage2,
        export_fn=lambda m, folder: export_stage2(m, folder, extra),
    )  # fmt: skip
    last = trainer.fit(progress=progress, stop_at=stop_at)
    trainer.close()
    result = {"last": last, "model_dir": str(out / "model"), "steps": trainer.step, "train_views": len(data)}
    if cfg.fit_glossy_weight and trainer.step >= tcfg.max_steps:
        result["glossy_weight"] = apply_glossy_fit(out, ds, train_ids, trainer.step)
    return result


def apply_glossy_fit(out: Path, ds: AnyDataset, train_ids: list[str], step: int) -> float:
    """Fit the glossy weight of the model trained to ``step`` and store it in ``out/model``; the fit
    is kept in ``out/glossy_fit.json`` and redone only when the run has trained further since."""
    from ..pipeline import NearPipeline
    from ..utils.atomic import atomic_write_json
    from .glossy_fit import fit_glossy_weight

    report = out / "glossy_fit.json"
    pipe = NearPipeline.from_pretrained(out / "model")
    kept = json.loads(report.read_text()) if report.is_file() else {}
    if kept.get("step") == step:
        weight = float(kept["glossy_weight"])
    else:
        fit = fit_glossy_weight(pipe, ds, train_ids)
        weight = fit.glossy_weight
        atomic_write_json(report, {**fit.as_json(), "step": step})
    basis = pipe.models["neural_basis"]
    if basis.glossy_weight != weight:
        basis.set_glossy_weight(weight)
        pipe.save_pretrained(out / "model")
    return weight


__all__ = ["Stage2Config", "train_stage2", "Stage2Step", "build_model", "MODEL_NAMES"]
