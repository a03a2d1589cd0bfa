"""``NearPipeline``: a set of named models plus the pipeline settings, loaded from one folder or repo.

A pipeline folder (or Hub repo) holds ``pipeline.json`` (TRELLIS) or ``pipeline.yaml`` (NeAR):

    {"name": ..., "args": {"models": {name: stem}, "slat_sampler": {...},
                           "slat_normalization": {"mean": [8], "std": [8]}, "image_cond_model": ...}}

Each stem is resolved relative to the pipeline folder / repo first, then as ``org/repo/path`` on
the Hub. Stage 1 lives here: :func:`sample_normalized_slat` (the flow sampler from image tokens to a
SLAT, which training calls too) and :meth:`NearPipeline.image_to_slat`; stage-2 models are just
more entries in ``self.models`` (rendered by :class:`near_blender.scene.SceneRenderer`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import NearError
from .models.checkpoint import from_pretrained as model_from_pretrained
from .models.checkpoint import save_pretrained as model_save_pretrained
from .models.homogenizer import LHSLatFlowModel, concat_shaded, unwrap_peft
from .models.hub import resolve_pipeline_file, split_hub_path
from .models.sampler import FlowEulerSampler, denormalize
from .sparse import SparseTensor
from .utils.atomic import atomic_write_json, atomic_write_text
from .utils.progress import CancelCheck, Progress, ProgressReporter, as_reporter

STAGE1_FLOW_MODELS = ("image_cond_model", "slat_flow_model", "lh_slat_flow_model")  # paper eq. 1


def read_pipeline_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``pipeline.json`` / ``pipeline.yaml`` into ``{"name", "args"}`` (args always a dict)."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise NearError(f"Cannot parse pipeline file {path}: {e}") from e
    if not isinstance(data, dict):
        raise NearError(f"Pipeline file {path} must hold a mapping with 'args' (or the args themselves).")
    if "args" not in data:
        data = {
            "name": data.get("name", "NearPipeline"),
            "args": {k: v for k, v in data.items() if k != "name"},
        }
    args = data["args"]
    if not isinstance(args, dict) or not isinstance(args.get("models", {}), dict):
        raise NearError(f"Pipeline file {path}: 'args.models' must map model names to checkpoint stems.")
    norm = args.get("slat_normalization")
    if norm is not None and (not isinstance(norm, dict) or "mean" not in norm or "std" not in norm):
        raise NearError(f"Pipeline file {path}: slat_normalization must have 'mean' and 'std' lists.")
    return {"name": data.get("name", "NearPipeline"), "args": args}


def sample_normalized_slat(
    flow: nn.Module,
    cond: torch.Tensor,
    coords: torch.Tensor | np.ndarray,
    sampler: FlowEulerSampler,
    *,
    generator: torch.Generator | None = None,
    z_s: SparseTensor | torch.Tensor | np.ndarray | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    cfg_interval: Sequence[float] | None = None,
    neg_cond: torch.Tensor | None = None,
    progress: Progress | ProgressReporter | None = None,
    cancel: CancelCheck | None = None,
) -> SparseTensor:
    """Stage 1's image -> SLAT sampling, for inference and training alike: run the rectified flow
    ``flow`` with ``sampler`` from noise on the voxels ``coords`` to normalized SLAT features.

    ``cond``: image tokens ``[B, T, C]`` (or ``[T, C]``); ``coords``: int ``[N, 3]`` (one asset) or
    ``[N, 4]`` (batch, x, y, z). The noise ``[N, flow.out_channels]`` is drawn from ``generator`` on the
    generator's device (the CPU without one) and moved to the flow's. ``z_s``: the normalized shaded
    SLAT ``[N, C_s]`` on the same voxels, required by a light-homogenizing flow (input ``[x_t, Z_s]``:
    an :class:`LHSLatFlowModel`, PEFT-wrapped or merged, or any flow with ``in = 2 out``) and refused by
    others. ``steps``, ``cfg`` (guidance strength), ``cfg_interval`` and ``neg_cond`` override the
    sampler's settings for this call; ``progress`` / ``cancel`` as in
    :meth:`FlowEulerSampler.sample`. Returns a :class:`SparseTensor` ``[N, out_channels]`` with
    coords ``[N, 4]`` int32, still normalized (the caller de-normalizes with its statistics).
    """
    param = next(iter(flow.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    c = coords if isinstance(coords, torch.Tensor) else torch.from_numpy(np.array(coords))
    if c.dim() != 2 or c.shape[1] not in (3, 4):
        raise NearError(f"coords must be [N, 3] or [N, 4]; got {tuple(c.shape)}.")
    if c.shape[1] == 3:
        c = torch.cat([torch.zeros_like(c[:, :1]), c], dim=1)
    c = c.to(device=device, dtype=torch.int32)
    cond = (cond[None] if cond.dim() == 2 else cond).to(device)
    n_out = int(flow.out_channels)
    noise = torch.randn(len(c), n_out, generator=generator, device=generator.device if generator else "cpu")
    x = SparseTensor(noise.to(device), c)
    core = unwrap_peft(flow)
    kwargs: dict[str, Any] = {}
    fn: Any = flow
    if _needs_shaded(core):
        if z_s is None:
            raise NearError(
                "This flow is light-homogenizing (input [x_t, Z_s]): pass z_s, the shaded SLAT sampled "
                "first with the base TRELLIS SLAT flow on the same coords."
            )
        feats = z_s.feats if isinstance(z_s, SparseTensor) else torch.as_tensor(z_s)
        z = x.replace(feats.to(device=device, dtype=x.dtype))
        if isinstance(core, LHSLatFlowModel):
            kwargs["z_s"] = z
        else:

            def fn(xx: SparseTensor, t: torch.Tensor, cc: torch.Tensor) -> SparseTensor:
                return flow(concat_shaded(xx, z, n_out), t, cc)

    elif z_s is not None:
        raise NearError("This flow takes no shaded SLAT z_s (its input is the noisy latent only).")
    return sampler.sample(
        fn, x, cond, neg_cond=neg_cond, steps=steps, cfg_strength=cfg, cfg_interval=cfg_interval,
        progress=progress, cancel=cancel, **kwargs,
    )  # fmt: skip


def _needs_shaded(model: nn.Module) -> bool:
    if isinstance(model, LHSLatFlowModel):
        return True
    cin, cout = getattr(model, "in_channels", None), getattr(model, "out_channels", None)
    return cin is not None and cout is not None and cin == 2 * cout


def _voxel_indices(coords: Any) -> np.ndarray:
    """``coords`` as a non-empty ``[N, 3]`` array of voxel indices (stage 1's input check)."""
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
        raise NearError(f"coords must be a non-empty [N, 3] array of voxel indices; got {c.shape}.")
    return c


class NearPipeline:
    """Named models + settings; ``models`` maps names (``slat_flow_model``, ``decoder``, ...) to modules."""

    def __init__(
        self,
        models: dict[str, nn.Module] | None = None,
        args: dict[str, Any] | None = None,
        name: str = "NearPipeline",
        file_format: str = "json",
    ) -> None:
        self.models: dict[str, nn.Module] = dict(models or {})
        self.args: dict[str, Any] = copy.deepcopy(args or {})
        self.args.setdefault("models", {k: f"ckpts/{k}" for k in self.models})
        self.name = name
        self.file_format = file_format
        self.slat_sampler = FlowEulerSampler.from_spec(self.args.get("slat_sampler"))
        self._image_encoder: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        for m in self.models.values():
            for p in m.parameters():
                return p.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        models: Iterable[str] | None = None,
        device: torch.device | str | None = None,
        strict: bool = True,
    ) -> NearPipeline:
        """Load a pipeline from a local folder or a Hub repo ``org/repo``.

        ``models`` restricts loading to those names (e.g. only ``["slat_flow_model"]`` from a full
        TRELLIS pipeline whose other models this version does not implement).
        """
        pfile, repo_id = resolve_pipeline_file(path, revision=revision, cache_dir=cache_dir)
        spec = read_pipeline_file(pfile)
        stems: dict[str, str] = spec["args"].get("models", {})
        wanted = list(stems) if models is None else list(models)
        absent = [n for n in wanted if n not in stems]
        if absent:
            raise NearError(f"Pipeline {path} has no model(s) {absent}; it lists {sorted(stems)}.")
        loaded: dict[str, nn.Module] = {}
        unresolved: list[str] = []
        for name in wanted:
            try:
                loaded[name] = _load_stem(
                    stems[name], pfile.parent, repo_id, revision, cache_dir, device, strict
                )
            except NearError as e:
                if str(e).startswith("Unknown model class"):
                    unresolved.append(f"{name} ({str(e).split(chr(39))[1]})")
                else:
                    raise NearError(f"Pipeline model {name!r} (stem {stems[name]!r}): {e}") from e
        if unresolved:
            raise NearError(
                f"Pipeline {path}: these models use classes this version cannot build: "
                f"{', '.join(unresolved)}. "
                f"Load the others with NearPipeline.from_pretrained(..., models=[...])."
            )
        fmt = "yaml" if pfile.suffix in (".yaml", ".yml") else "json"
        return cls(loaded, spec["args"], name=spec["name"], file_format=fmt)

    def save_pretrained(self, folder: str | os.PathLike[str], file_format: str | None = None) -> Path:
        """Write every model (``{name, args}`` + safetensors) and the pipeline file, atomically each."""
        folder = Path(folder)
        fmt = file_format or self.file_format
        if fmt not in ("json", "yaml"):
            raise NearError(f"Pipeline file format must be 'json' or 'yaml', got {fmt!r}.")
        args = copy.deepcopy(self.args)
        stems = dict(args.get("models", {}))
        for name, model in self.models.items():
            stem = stems.get(name) or f"ckpts/{name}"
            if not _is_local_stem(stem):
                stem = f"ckpts/{name}"
            stems[name] = stem
            model_save_pretrained(model, folder, stem)
        args["models"] = stems
        if self.stage1_method == "delight":  # no flow to sample: a sampler setting would do nothing
            args.pop("slat_sampler", None)
        else:
            args["slat_sampler"] = self.slat_sampler.to_spec()
        data = {"name": self.name, "args": args}
        if fmt == "json":
            out = folder / "pipeline.json"
            atomic_write_json(out, data)
        else:
            import yaml

            out = folder / "pipeline.yaml"
            atomic_write_text(out, yaml.safe_dump(data, sort_keys=False))
        return out

    def to(self, device: torch.device | str) -> NearPipeline:
        for m in self.models.values():
            m.to(device)
        return self

    # ------------------------------------------------------------------ stage 1
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Condition tokens ``[B, T, C]`` from images ``[B, 3, H, W]`` in [0, 1]."""
        enc = self.models.get("image_cond_model")
        if enc is None:
            if self._image_encoder is None:
                from .models.image_encoder import image_cond_model

                spec = self.args.get("image_cond_model")
                if not isinstance(spec, str):
                    raise NearError(
                        "This pipeline has no image encoder "
                        "(models.image_cond_model or args.image_cond_model)."
                    )
                self._image_encoder = image_cond_model(spec, device=self.device)
            enc = self._image_encoder
        with torch.no_grad():
            return enc.encode(images.to(self.device))

    # ------------------------------------------------------------------ NeAR inference (default model layout)
    def image_to_slat(
        self,
        image_rgba: Any,
        coords: Any,
        *,
        seed: int = 0,
        steps: int | None = None,
        progress: Progress | ProgressReporter | None = None,
        cancel: CancelCheck | None = None,
        camera: tuple[Any, Any] | None = None,
    ) -> Any:
        """Stage 1: a casually lit image + geometry-prior voxels -> the LH-SLAT features.

        ``image_rgba``: ``[H, W, 4]`` float, scene-linear premultiplied RGBA (alpha masks the object);
        ``coords``: ``[N, 3]`` int voxel coordinates in 0..63. Returns float32 ``[N, C]`` in the
        stage-2 input space (de-normalized; ``C`` = 8, or 16 with the base-colour SLAT). Runs the base
        flow (image -> shaded SLAT ``Z_s``) then the homogenizer ((image, ``Z_s``) -> LH-SLAT), as in
        paper eq. 1. Needs ``image_cond_model``, ``slat_flow_model``, ``lh_slat_flow_model`` and
        ``args.stage1``.

        Models trained with ``zs_source: "projection"`` (``args.stage1.zs_source``; the bundled
        default model) take ``Z_s`` from the image projected onto the voxels instead
        (:mod:`near_blender.data.image_projection`) and need ``camera = (viewmat [4, 4], K [3, 3])``:
        the camera that took the image, in the voxels' object space (OpenCV, K in the image's
        pixels).
        """
        from .models.image_encoder import prepare_image

        if self.stage1_method == "delight":
            return self._delight_slat(image_rgba, coords, camera, progress, cancel)
        for need in STAGE1_FLOW_MODELS:
            if need not in self.models:
                raise NearError(f"This pipeline has no stage-1 model {need!r}; it has {sorted(self.models)}.")
        s1 = self.args.get("stage1")
        if not s1:
            raise NearError(
                "This pipeline has no 'stage1' settings (normalization, image size) in its pipeline file."
            )
        c = _voxel_indices(coords)
        rep = as_reporter(progress, cancel)
        img = prepare_image(np.asarray(image_rgba, dtype=np.float32), int(s1["image_size"]))
        sampler = FlowEulerSampler.from_spec(s1.get("sampler") or self.args.get("slat_sampler"))
        g = torch.Generator().manual_seed(int(seed))
        base = self.models["slat_flow_model"]
        projected = s1.get("zs_source", "base_flow") == "projection"
        z_proj = self._projected_zs(image_rgba, c, camera, s1) if projected else None
        cond = self.encode_image(img[None])
        if z_proj is not None:
            z_s: Any = torch.from_numpy(z_proj)
            # the base flow's noise is drawn all the same: a seed's homogenizer noise does not depend on
            # where Z_s comes from
            torch.randn(len(c), int(base.out_channels), generator=g)
        else:
            z_s = sample_normalized_slat(
                base, cond, c, sampler, generator=g, steps=steps, progress=rep.sub(0.0, 0.5)
            )
        z = sample_normalized_slat(
            self.models["lh_slat_flow_model"], cond, c, sampler, generator=g, z_s=z_s, steps=steps,
            progress=rep.sub(0.5, 1.0),
        )  # fmt: skip
        out = denormalize(z, s1["normalization"]["lh"])
        return out.feats.float().cpu().numpy()

    @property
    def missing_stage1(self) -> list[str]:
        """What :meth:`image_to_slat` lacks in this pipeline (empty when stage 1 can run): the flow
        models, or the delighting calibration."""
        if self.stage1_method == "delight":
            return (
                []
                if isinstance((self.args.get("stage1") or {}).get("calibration"), dict)
                else ["args.stage1.calibration"]
            )
        return [n for n in STAGE1_FLOW_MODELS if n not in self.models]

    @property
    def stage1_method(self) -> str:
        """``flow`` (paper eq. 1: base flow + LoRA homogenizer) or ``delight`` (the bundled model's
        deterministic estimate, :mod:`near_blender.data.delighting`), from ``args.stage1.method``."""
        return str((self.args.get("stage1") or {}).get("method", "flow"))

    @property
    def needs_input_camera(self) -> bool:
        """Whether :meth:`image_to_slat` needs the input image's camera (``zs_source: projection``
        or the ``delight`` stage 1: both read the image projected onto the prior)."""
        s1 = self.args.get("stage1") or {}
        return self.stage1_method == "delight" or s1.get("zs_source", "base_flow") == "projection"

    def _delight_slat(
        self,
        image_rgba: Any,
        coords: Any,
        camera: tuple[Any, Any] | None,
        progress: Progress | ProgressReporter | None,
        cancel: CancelCheck | None,
    ) -> Any:
        """Stage 1 by delighting (``args.stage1.method == "delight"``): ``[N, C]`` float32 LH-SLAT."""
        from .data.delighting import calibrated_slat, delight_image, prior_geometry

        s1 = self.args.get("stage1") or {}
        calibration = s1.get("calibration")
        if not isinstance(calibration, dict):
            raise NearError("args.stage1 has no 'calibration'; re-run `near train stage1-delight`.")
        if camera is None:
            raise NearError(_NO_CAMERA)
        c = _voxel_indices(coords)
        rep = as_reporter(progress, cancel)
        rep.update(0.0, "stage 1: reading the geometry prior")
        key = (c.shape, hash(np.ascontiguousarray(c, np.int64).tobytes()))
        cache = self.__dict__.setdefault("_prior_geometry", {})
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[key] = prior_geometry(c, int(s1.get("resolution", 64)))
        rep.update(0.7, "stage 1: delighting the image")
        viewmat, K = camera
        lit = delight_image(np.asarray(image_rgba, np.float32), viewmat, K, c, geometry=cache[key])
        feats = calibrated_slat(lit, calibration)
        rep.update(1.0, "stage 1: done")
        return feats

    @staticmethod
    def _projected_zs(image_rgba: Any, coords: Any, camera: Any, s1: dict[str, Any]) -> Any:
        """Normalized projected ``Z_s`` ``[N, 8]`` (see :meth:`image_to_slat`)."""
        from .data.image_projection import project_image_features
        from .models.sampler import normalize_features

        if camera is None:
            raise NearError(_NO_CAMERA)
        norm = (s1.get("normalization") or {}).get("projection")
        if not norm:
            raise NearError("args.stage1.normalization lacks 'projection' statistics; re-export stage 1.")
        viewmat, K = camera
        f = project_image_features(np.asarray(image_rgba, np.float32), viewmat, K, coords)
        return normalize_features(f, norm)

    def stage2(self) -> Any:
        """The stage-2 stack (:class:`~near_blender.models.relightable.RelightableDecoder`) of this
        pipeline's ``decoder``, ``renderer``, ``hdri_encoder`` and ``neural_basis`` (built once)."""
        if getattr(self, "_stage2", None) is None:
            from .models.relightable import RelightableDecoder

            self._stage2 = RelightableDecoder.from_models(self.models).eval()
        return self._stage2

    def stage2_inputs(self, coords: Any, feats: Any) -> SparseTensor:
        """A one-item SparseTensor of stage-2 input features, standardized as in training."""
        s2 = self.args.get("stage2") or {}
        norm = s2.get("slat_normalization")
        f = np.asarray(feats, dtype=np.float32)
        c = np.asarray(coords)
        if norm is not None:
            if len(norm["mean"]) != f.shape[1]:
                raise NearError(
                    f"The SLAT has {f.shape[1]} channels but this model expects {len(norm['mean'])} "
                    "(LH-SLAT, plus the base-colour SLAT when the model was trained with it)."
                )
            f = (f - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
        vox = np.concatenate([np.zeros((len(c), 1), np.int32), c.astype(np.int32)], 1)
        return SparseTensor(torch.from_numpy(f).to(self.device), torch.from_numpy(vox).to(self.device))

    def conditioning(self, env: Any) -> Any:
        """An :class:`~near_blender.render.conditioning.EnvConditioning` at this model's resolution."""
        from .render.conditioning import CONDITIONING, EnvConditioning

        s2 = self.args.get("stage2") or {}
        declared = {**CONDITIONING, **(s2.get("conditioning") or {})}
        if declared != CONDITIONING:
            raise NearError(
                f"This model's stage 2 was trained with lighting conditioning {declared}, but this version of "
                f"near-blender computes {CONDITIONING}; use the near-blender version the model was made with."
            )
        return EnvConditioning(env, int(s2.get("env_height", 32)), device=self.device)


_NO_CAMERA = (
    "This model's stage 1 reads the input image projected onto the geometry prior, so it needs the "
    "camera that took the image: in Blender, fit the scene camera with Object > NeAR > Fit Camera to "
    "Image; on the command line, write camera.json with `near fit-camera` and pass `near import-image "
    "--camera camera.json`."
)


def _is_local_stem(stem: str) -> bool:
    return not (stem.startswith(("/", "~")) or ".." in Path(stem).parts or ":" in stem)


def _load_stem(
    stem: str,
    folder: Path,
    repo_id: str | None,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    device: torch.device | str | None,
    strict: bool,
) -> nn.Module:
    """A model stem: relative to the pipeline folder / repo first, then as a full Hub path."""
    local = folder / stem
    if repo_id is None and local.with_name(local.name + ".json").is_file():
        return model_from_pretrained(local, strict=strict, device=device)
    if repo_id is not None:
        try:
            return model_from_pretrained(
                f"{repo_id}/{stem}", revision=revision, cache_dir=cache_dir, strict=strict, device=device
            )
        except NearError as e:
            msg = str(e)
            if "does not exist in Hub repository" not in msg and "is not in the local" not in msg:
                raise
            first: NearError | None = e
    else:
        first = None
    try:
        split_hub_path(stem)
    except NearError:
        if first is not None:
            raise first from None
        raise NearError(f"Checkpoint {local}.json not found beside the pipeline file.") from None
    return model_from_pretrained(stem, cache_dir=cache_dir, strict=strict, device=device)
