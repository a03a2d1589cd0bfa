"""Stage-1 training (paper 3.4 and A.1): image -> Lighting-Homogenized SLAT, in two steps.

1. **Base flow** ``f_s`` (the role of TRELLIS's pretrained image-to-SLAT flow, trained here because
   no pretrained one can be downloaded): conditional flow matching from an image rendered under
   TRELLIS's three-light rig (``cond`` and ``shaded`` views) to the asset's shaded SLAT
   (``slat_shaded``), with a small trainable image encoder producing the condition tokens.
2. **Homogenizer** ``f_theta`` = ``f_s`` widened to take ``[x_t, Z_s]`` (zero weights on ``Z_s``, so
   it starts as ``f_s``) with LoRA adapters (PEFT, rsLoRA) on the attention projections plus the
   widened input layer, trained with the flow-matching loss of eq. 4 from a casually lit input image
   (``inputs`` views) and ``Z_s = f_s(image)`` (sampled once per input view with the trained base
   flow by inference's :func:`near_blender.pipeline.sample_normalized_slat`) to the LH-SLAT
   (``slat_lh`` [+ ``slat_bc``]). The adapters are merged for deployment.

Images enter the encoder as Blender shows them: the premultiplied HDR render tone-mapped with AgX,
cropped to the alpha bounding box (a 10% margin) and resized to a square (TRELLIS crops the same way).
SLAT features are standardized per channel with statistics of the training assets.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import NearError
from ..data.dataset import NearDataset, ViewRecord
from ..models.flow_matching import flow_matching_loss
from ..models.homogenizer import attach_lora, from_base_flow, merged_model
from ..models.image_encoder import PatchImageEncoder, prepare_image
from ..models.sampler import FlowEulerSampler, normalize_features
from ..models.slat_flow import SLatFlowModel
from ..pipeline import sample_normalized_slat
from ..sparse import SparseTensor
from ..utils.atomic import atomic_write_json
from ..utils.config_file import read_config_file
from .trainer import ItemRandom, TrainConfig, Trainer

SIGMA_MIN = 1e-5


# ---------------------------------------------------------------------------------------------
# Image preprocessing (shared with inference: NearPipeline.image_to_slat)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass
class Stage1Config:
    data: str = "data/default"
    out: str = "runs/stage1"
    held_out_fraction: float = 0.2
    use_bc_slat: bool = True
    image_size: int = 64
    encoder: dict[str, Any] = field(
        default_factory=lambda: {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}
    )
    flow: dict[str, Any] = field(default_factory=dict)  # SLatFlowModel.tiny_config overrides
    lora: dict[str, Any] = field(default_factory=lambda: {"rank": 16, "use_rslora": True})
    base_train: dict[str, Any] = field(
        default_factory=lambda: {"max_steps": 600, "batch_size": 2, "lr": 3e-4}
    )
    lh_train: dict[str, Any] = field(default_factory=lambda: {"max_steps": 600, "batch_size": 2, "lr": 3e-4})
    zs_steps: int = 10  # Euler steps when sampling Z_s for the homogenizer's training pairs
    # where the homogenizer's Z_s comes from: "base_flow" (sampled from the image by the base flow,
    # as in the paper) or "projection" (the input image projected onto the prior's voxels through
    # its camera, :mod:`near_blender.data.image_projection`; inference then needs that camera)
    zs_source: str = "base_flow"
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"steps": 25, "rescale_t": 3.0, "cfg_strength": 0.0}
    )

    @classmethod
    def from_file(cls, path: str | Path) -> Stage1Config:
        d = read_config_file(path)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise NearError(f"{path}: unknown stage-1 option(s) {unknown}.")
        return cls(**d)

    # the Trainer's `train` field name is shared with stage 2's CLI override
    @property
    def train(self) -> dict[str, Any]:
        return self.base_train

    @train.setter
    def train(self, value: dict[str, Any]) -> None:
        self.base_train = dict(value)
        self.lh_train = {**self.lh_train, **{k: v for k, v in value.items() if k == "max_steps"}}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _norm_stats(feats: list[np.ndarray]) -> dict[str, list[float]]:
    f = np.concatenate(feats, 0).astype(np.float64)
    std = f.std(0)
    return {"mean": f.mean(0).tolist(), "std": np.where(std < 1e-6, 1.0, std).tolist()}


def lh_target(ds: NearDataset, asset_id: str, use_bc: bool) -> tuple[np.ndarray, np.ndarray]:
    return ds.slat_features(asset_id, use_bc)


class ImageSlatPairs:
    """Items: (view record, image tensor [3,S,S], coords [N,3], target feats [N,C] normalized)."""

    def __init__(self, ds: NearDataset, records: list[ViewRecord], targets: dict[str, tuple[np.ndarray, np.ndarray]],
                 size: int) -> None:  # fmt: skip
        self.ds, self.records, self.targets, self.size = ds, records, targets, size
        self._img_cache: dict[tuple[str, str], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.records)

    def image(self, rec: ViewRecord) -> torch.Tensor:
        key = (rec.asset_id, rec.file)
        if key not in self._img_cache:
            self._img_cache[key] = prepare_image(self.ds.read(rec)["rgba"], self.size)
        return self._img_cache[key]

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        coords, feats = self.targets[rec.asset_id]
        return {"record": rec, "image": self.image(rec), "coords": coords, "feats": feats}


def _sparse(items: list[dict[str, Any]], key: str) -> SparseTensor:
    coords = [
        np.concatenate([np.full((len(it["coords"]), 1), b, np.int32), it["coords"]], 1)
        for b, it in enumerate(items)
    ]
    return SparseTensor(
        feats=torch.from_numpy(np.concatenate([it[key] for it in items]).astype(np.float32)),
        coords=torch.from_numpy(np.concatenate(coords).astype(np.int32)),
    )


# ---------------------------------------------------------------------------------------------
# Models being trained
# ---------------------------------------------------------------------------------------------


class ConditionedFlow(nn.Module):
    """Image encoder + SLAT flow, trained together (the encoder stays frozen in the LoRA phase)."""

    def __init__(self, encoder: nn.Module, flow: nn.Module) -> None:
        super().__init__()
        self.encoder, self.flow = encoder, flow

    def forward(self, x: SparseTensor, t: torch.Tensor, images: torch.Tensor, **kw: Any) -> SparseTensor:
        return self.flow(x, t, self.encoder.encode(images), **kw)


def build_base_flow(cfg: Stage1Config) -> ConditionedFlow:
    """The untrained base flow ``f_s`` of stage 1: ``cfg.encoder`` + an 8-channel SLAT flow
    (:meth:`SLatFlowModel.tiny_config` with the ``cfg.flow`` overrides)."""
    enc_args = {**cfg.encoder, "img_size": cfg.image_size}
    encoder = PatchImageEncoder(**enc_args)
    flow_args = SLatFlowModel.tiny_config(
        in_channels=8, out_channels=8, cond_channels=enc_args["embed_dim"], **cfg.flow
    )
    return ConditionedFlow(encoder, SLatFlowModel(**flow_args))


def _flow_step(
    model: nn.Module, items: list[dict[str, Any]], rand: ItemRandom, with_zs: bool
) -> dict[str, Any]:
    x0 = _sparse(items, "feats")
    images = torch.stack([it["image"] for it in items])
    # per-item times (logit-normal, TRELLIS) and per-voxel noise from the item's own stream
    t = torch.sigmoid(torch.stack([torch.randn((), generator=g) + 1.0 for g in rand.generators]))
    mix = torch.stack([torch.rand((), generator=g) for g in rand.generators])
    u = torch.stack([torch.rand((), generator=g) for g in rand.generators])
    t = torch.where(mix < 0.5, u, t)  # half uniform times keep the whole path trained
    noise = torch.cat([torch.randn(len(it["coords"]), x0.feats.shape[1], generator=g)
                       for it, g in zip(items, rand.generators)])  # fmt: skip
    kw = {"z_s": _sparse(items, "z_s")} if with_zs else {}
    return {"total": flow_matching_loss(model, x0, images, t=t, noise=noise, sigma_min=SIGMA_MIN, **kw)}


def _export_flow(model: nn.Module, folder: Path, stem: str, extra: dict[str, Any]) -> None:
    from ..models.checkpoint import save_pretrained

    folder.mkdir(parents=True, exist_ok=True)
    enc = model.encoder
    flow = model.flow
    if hasattr(flow, "peft_config"):
        flow = merged_model(copy.deepcopy(flow))  # the EMA copy keeps training: merge a copy
    save_pretrained(enc, folder, "image_cond_model")
    save_pretrained(flow, folder, stem)
    atomic_write_json(folder / f"{stem}.stage1.json", extra)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train_stage1(cfg: Stage1Config, progress: bool = True) -> dict[str, Any]:
    ds = NearDataset(cfg.data)
    train_ids, test_ids = ds.split(cfg.held_out_fraction)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    shaded = {a: ds.slat(a, "shaded") for a in train_ids}
    lh = {a: lh_target(ds, a, cfg.use_bc_slat) for a in train_ids}
    norm_file = out / "normalization.json"
    if norm_file.is_file():
        norms = json.loads(norm_file.read_text())
    else:
        norms = {
            "shaded": _norm_stats([f for _, f in shaded.values()]),
            "lh": _norm_stats([f for _, f in lh.values()]),
        }
        atomic_write_json(norm_file, norms)
    shaded_n = {a: (c, normalize_features(f, norms["shaded"])) for a, (c, f) in shaded.items()}
    lh_n = {a: (c, normalize_features(f, norms["lh"])) for a, (c, f) in lh.items()}

    # ---- 1. base flow: rig-lit image -> shaded SLAT
    torch.manual_seed(int(cfg.base_train.get("seed", 0)))  # initial weights follow the training seed
    base = build_base_flow(cfg)
    recs = [r for a in train_ids for s in ("cond", "shaded") for r in ds.views(a, s)]
    data = ImageSlatPairs(ds, recs, shaded_n, cfg.image_size)
    extra = {"normalization": norms, "image_size": cfg.image_size, "train_assets": train_ids, "held_out_assets": test_ids,
             "config": asdict(cfg)}  # fmt: skip
    t1 = Trainer(base, data, lambda m, b, r: _flow_step(m, b, r, False), TrainConfig.from_dict(cfg.base_train),
                 out / "base", collate=list, export_fn=lambda m, f: _export_flow(m, f, "slat_flow_model", extra))  # fmt: skip
    last_base = t1.fit(progress=progress)
    t1.close()
    base_flow = (t1.ema.model if t1.ema else base).eval()

    # ---- 2. Z_s for every training input view: sampled once with the base flow, or projected
    inputs = [r for a in train_ids for r in ds.views(a, "inputs")]
    if cfg.zs_source not in ZS_SOURCES:
        raise NearError(f"zs_source must be one of {ZS_SOURCES}, got {cfg.zs_source!r}.")
    if cfg.zs_source == "projection":
        zs, norms = projected_zs(ds, inputs, lh, norms, norm_file)
        extra["normalization"] = norms
        return _train_homogenizer(
            cfg, ds, inputs, lh_n, zs, norms, base_flow, extra, out, progress, last_base
        )
    zs_file = out / "z_s.safetensors"
    zs: dict[str, np.ndarray] = load_zs(zs_file)
    sampler = FlowEulerSampler(sigma_min=SIGMA_MIN, steps=cfg.zs_steps, rescale_t=3.0, cfg_strength=0.0)
    pairs = ImageSlatPairs(ds, inputs, shaded_n, cfg.image_size)
    todo = [r for r in inputs if f"{r.asset_id}/{r.file}" not in zs]
    if todo:
        from tqdm import tqdm

        for r in tqdm(todo, desc="sampling Z_s", disable=not progress):
            with torch.no_grad():
                cond = base_flow.encoder.encode(pairs.image(r)[None])
            z = sample_normalized_slat(
                base_flow.flow,
                cond,
                shaded_n[r.asset_id][0],
                sampler,
                generator=torch.Generator().manual_seed(0),
            )
            zs[f"{r.asset_id}/{r.file}"] = z.feats.numpy()

        save_zs(zs_file, zs)

    return _train_homogenizer(cfg, ds, inputs, lh_n, zs, norms, base_flow, extra, out, progress, last_base)


ZS_SOURCES = ("base_flow", "projection")


def save_zs(path: Path, zs: dict[str, np.ndarray]) -> None:
    """The sampled Z_s of each input view ("asset/file" -> [N, C] float32), as safetensors (atomic)."""
    from safetensors.numpy import save_file

    from ..utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in zs.items()}, str(tmp))


def load_zs(path: Path) -> dict[str, np.ndarray]:
    """What :func:`save_zs` wrote ({} when there is no file yet): a resumed run samples only the rest."""
    if not path.is_file():
        return {}
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - any damage: say which file and what to do
        raise NearError(
            f"Cannot read the sampled Z_s cache {path} ({type(e).__name__}); delete it and the run samples "
            "Z_s again."
        ) from None


def projected_zs(
    ds: NearDataset,
    inputs: list[ViewRecord],
    lh: dict[str, tuple[np.ndarray, np.ndarray]],
    norms: dict[str, Any],
    norm_file: Path,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Normalized projected ``Z_s`` ``[N, 8]`` per input view (key ``asset/file``); adds the
    projection's statistics to ``norms`` (and ``norm_file``) the first time."""
    from ..data.image_projection import project_image_features

    raw = {}
    for r in inputs:
        coords = lh[r.asset_id][0]
        raw[f"{r.asset_id}/{r.file}"] = project_image_features(
            ds.read(r)["rgba"], r.camera.viewmat, r.camera.K, coords
        )
    if "projection" not in norms:
        norms = {**norms, "projection": _norm_stats(list(raw.values()))}
        atomic_write_json(norm_file, norms)
    return {k: normalize_features(v, norms["projection"]) for k, v in raw.items()}, norms


def _train_homogenizer(
    cfg: Stage1Config,
    ds: NearDataset,
    inputs: list[ViewRecord],
    lh_n: dict[str, tuple[np.ndarray, np.ndarray]],
    zs: dict[str, np.ndarray],
    norms: dict[str, Any],
    base_flow: nn.Module,
    extra: dict[str, Any],
    out: Path,
    progress: bool,
    last_base: Any,
) -> dict[str, Any]:
    # ---- 3. homogenizer: (input image, Z_s) -> LH-SLAT, LoRA on the base flow
    extra = {**extra, "zs_source": cfg.zs_source}
    homog = build_homogenizer(cfg, base_flow, lh_channels=len(norms["lh"]["mean"]))
    lh_recs = [r for r in inputs]
    lh_items = _LHPairs(ds, lh_recs, lh_n, zs, cfg.image_size)
    t2 = Trainer(homog, lh_items, lambda m, b, r: _flow_step(m, b, r, True), TrainConfig.from_dict(cfg.lh_train),
                 out / "homogenizer", collate=list,
                 export_fn=lambda m, f: _export_flow(m, f, "lh_slat_flow_model", extra))  # fmt: skip
    last_lh = t2.fit(progress=progress)
    t2.close()
    return {
        "base": last_base,
        "homogenizer": last_lh,
        "out": str(out),
        "normalization": str(out / "normalization.json"),
    }


def build_homogenizer(cfg: Stage1Config, base_flow: ConditionedFlow, lh_channels: int) -> ConditionedFlow:
    """The homogenizer that stage 1 trains: ``base_flow``'s flow widened to ``[x_t, Z_s]``
    (:func:`~near_blender.models.homogenizer.from_base_flow`) with ``cfg.lora`` adapters, and its
    encoder, frozen.

    Trainable afterwards: the LoRA matrices, the input layer, ``cfg.lora``'s ``train_modules`` and,
    when the output is widened beyond the base flow's channels, the output layer.
    """
    lh_flow = from_base_flow(base_flow.flow, shaded_channels=8, out_channels=lh_channels)
    lora = dict(cfg.lora)
    if lh_channels > int(base_flow.flow.out_channels):
        # the widened output rows (e.g. the base-colour SLAT's channels) start at zero and only a
        # trainable output layer can learn them; with a frozen one they stay pure sampler noise
        lora["train_output_layer"] = True
    peft_flow = attach_lora(lh_flow, **lora)
    for p in base_flow.encoder.parameters():
        p.requires_grad_(False)
    return ConditionedFlow(base_flow.encoder, peft_flow)


class _LHPairs(ImageSlatPairs):
    def __init__(self, ds, records, targets, zs, size) -> None:  # noqa: ANN001
        super().__init__(ds, records, targets, size)
        self.zs = zs

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = super().__getitem__(i)
        it["z_s"] = self.zs[f"{it['record'].asset_id}/{it['record'].file}"]
        return it
