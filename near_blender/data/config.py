"""Options of the training-data generator (``near datagen``), shared by the CLI and the Blender script.

The same argument parser is used by ``near datagen`` (bpy-free) and by the Blender-side script
(``operators/datagen/headless.py``), so that the CLI can forward its options verbatim.

Presets (counts follow paper 4.1 and TRELLIS; ``paper`` is the default):

==================  =======  ======  ====================================================
option              paper    tiny    meaning
==================  =======  ======  ====================================================
resolution          512      128     square renders, pixels
homog_views         150      12      stage-1 views under the uniform white world (paper 3.3)
shaded_views        150      12      the same cameras under TRELLIS's three-light rig
cond_views          24       4       TRELLIS conditioning cameras (FOV 10-70) under the rig
input_views         24       4       stage-1 inputs under random lighting (M; not given in
                                     the paper, TRELLIS's conditioning count is used)
relit_views         12       4       stage-2 cameras, uniform on a sphere of radius 2
relit_lights        16       4       random Z-rotated environment maps per stage-2 view
holdout_envmaps     -        2       maps kept out of the random pool (evaluation)
samples eevee/cyc.  64/128   16/32   per pixel
==================  =======  ======  ====================================================
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from .. import NearError

ENGINES = {"eevee": "BLENDER_EEVEE", "cycles": "CYCLES"}
FEATURES = ("colour_normal", "dinov2")
DENOISE_PREFILTERS = ("fast", "accurate")
HOLDOUT_RENDERS = ("held_out", "all")
# config.json files written before these options existed rendered this way
LEGACY_DEFAULTS = {"denoise_prefilter": "accurate", "holdout_renders": "all"}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "resolution": 512,
        "homog_views": 150,
        "shaded_views": 150,
        "cond_views": 24,
        "input_views": 24,
        "relit_views": 12,
        "relit_lights": 16,
        "holdout_envmaps": (),
        "samples": {"eevee": 64, "cycles": 128},
    },
    "tiny": {
        "resolution": 128,
        "homog_views": 12,
        "shaded_views": 12,
        "cond_views": 4,
        "input_views": 4,
        "relit_views": 4,
        "relit_lights": 4,
        "holdout_envmaps": ("courtyard", "sunset"),
        "samples": {"eevee": 16, "cycles": 32},
    },
}


@dataclass(frozen=True)
class DatagenConfig:
    """Everything that decides the generated data (recorded in ``DIR/config.json``).

    Two runs writing into one dataset folder (shards, resumes) must agree on all of these.
    """

    engine: str = "eevee"  # 'eevee' (EEVEE Next, the paper's) or 'cycles'
    resolution: int = 512
    samples: int = 64
    denoise: bool = True  # Cycles only (OpenImageDenoise on Combined)
    # Cycles' denoiser: 'fast' feeds it the rendered albedo and normal as they are, 'accurate'
    # denoises them first (Blender's default; ~1.6x the time of a 64^2 data render, same look)
    denoise_prefilter: str = "fast"
    seed: int = 0
    homog_views: int = 150
    shaded_views: int = 150
    cond_views: int = 24
    input_views: int = 24
    relit_views: int = 12
    relit_lights: int = 16
    holdout_envmaps: tuple[str, ...] = ()
    # which assets get the held-out maps' views (inputs_holdout, relit_holdout): only the
    # evaluation reads them, and only for held-out assets ('held_out', layout.is_held_out at the
    # default fraction), or every asset ('all')
    holdout_renders: str = "held_out"
    area_light_size: float = 1.0  # metres (square); the paper does not give a size
    input_yaw_center_deg: float = -90.0  # azimuth of the asset's front (-Y), see sampling.py
    features: str = "colour_normal"
    voxel_resolution: int = 64
    preset: str = "paper"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise NearError(f"Unknown engine {self.engine!r}; use one of {sorted(ENGINES)}.")
        if not 8 <= self.resolution <= 8192:
            raise NearError(f"Resolution {self.resolution} is out of range; use 8..8192 pixels.")
        if self.samples < 1:
            raise NearError(f"Samples must be >= 1, got {self.samples}.")
        for name in (
            "homog_views",
            "shaded_views",
            "cond_views",
            "input_views",
            "relit_views",
            "relit_lights",
        ):
            if getattr(self, name) < 0:
                raise NearError(f"--{name.replace('_', '-')} must be >= 0.")
        if self.features not in FEATURES:
            raise NearError(f"Unknown feature extractor {self.features!r}; use one of {FEATURES}.")
        if self.voxel_resolution != 64:
            raise NearError("Only 64^3 voxel grids are supported (the SLAT resolution).")
        if self.denoise_prefilter not in DENOISE_PREFILTERS:
            raise NearError(f"--denoise-prefilter must be one of {DENOISE_PREFILTERS}.")
        if self.holdout_renders not in HOLDOUT_RENDERS:
            raise NearError(f"--holdout-renders must be one of {HOLDOUT_RENDERS}.")
        if self.area_light_size <= 0:
            raise NearError("--area-light-size must be positive (metres).")

    @property
    def blender_engine(self) -> str:
        return ENGINES[self.engine]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["holdout_envmaps"] = list(self.holdout_envmaps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatagenConfig:
        """The config of a ``to_dict`` / ``generation`` dict (``config.json``); other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["holdout_envmaps"] = tuple(kw.get("holdout_envmaps", ()))
        for name, before in LEGACY_DEFAULTS.items():  # what datasets written before the option used
            kw.setdefault(name, before)
        return cls(**kw)

    def generation(self) -> dict[str, Any]:
        """The settings that decide the data (the preset name only supplies defaults)."""
        d = self.to_dict()
        d.pop("preset")
        return d


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N; ``None`` -> (0, 1)."""
    if text is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise NearError(f"--shard {text!r} is not of the form i/N (e.g. 0/4).")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise NearError(f"--shard {text}: need 0 <= i < N (shards are numbered from 0).")
    return i, n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The generator's options (used by ``near datagen`` and by the Blender script)."""
    g = parser.add_argument_group("what to render")
    parser.add_argument("--out", required=True, help="dataset folder (created; shared by shards)")
    g.add_argument("--assets", nargs="*", default=[], metavar="PATH",
                   help="asset files (.blend .glb .gltf .obj .fbx .ply), folders of them, or "
                        "procedural specs 'proc:SHAPE[,key=value...]'")  # fmt: skip
    g.add_argument(
        "--procedural", type=int, default=0, metavar="N", help="add N assets from the procedural library"
    )
    g.add_argument("--library", choices=("v1", "v2"), default="v1",
                   help="procedural library: v1 = 10 primitives and 4 textures (the shipped model's data); "
                        "v2 = v1 plus booleans, thin parts, concavities, displacement, bevels and 8 "
                        "textures incl. bricks, gradients and stickers (ids proc2-*)")  # fmt: skip
    g.add_argument("--envmaps", nargs="*", default=None, metavar="PATH",
                   help="HDR environment maps (equirect .exr/.hdr files or folders); "
                        "default: Blender's 8 bundled studio HDRIs")  # fmt: skip
    g.add_argument("--holdout-envmaps", nargs="*", default=None, metavar="NAME",
                   help="environment maps (by file stem) excluded from the random pool and "
                        "rendered separately as relit_holdout views")  # fmt: skip
    p = parser.add_argument_group("settings (defaults from --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--engine", choices=sorted(ENGINES), default="eevee",
                   help="eevee = EEVEE Next (paper); cycles is faster on CPU-only machines")  # fmt: skip
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--no-denoise", dest="denoise", action="store_false", help="Cycles: no denoiser")
    p.add_argument("--denoise-prefilter", choices=DENOISE_PREFILTERS, default="fast",
                   help="Cycles denoiser: fast (default) uses the rendered albedo and normal as they are; "
                        "accurate denoises them first (Blender's default, ~1.6x slower at 64 px)")  # fmt: skip
    p.add_argument("--holdout-renders", choices=HOLDOUT_RENDERS, default="held_out",
                   help="render the held-out maps' views for the held-out assets only (default: the "
                        "evaluation reads no others) or for all assets")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    for name in ("homog_views", "shaded_views", "cond_views", "input_views", "relit_views", "relit_lights"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    p.add_argument("--area-light-size", type=float, default=1.0, help="metres")
    p.add_argument("--input-yaw-center", type=float, default=-90.0, dest="input_yaw_center_deg",
                   help="azimuth (deg, from +X toward +Y) that input-view yaws are centred on; "
                        "-90 = the asset's front (-Y)")  # fmt: skip
    p.add_argument("--features", choices=FEATURES, default="colour_normal",
                   help="per-voxel feature extractor for the SLAT files")  # fmt: skip
    r = parser.add_argument_group("running")
    r.add_argument(
        "--shard", default=None, metavar="i/N", help="render only shard i of N (deterministic split)"
    )
    r.add_argument("--resume", action="store_true", help="keep finished assets and views, redo the rest")
    r.add_argument("--retry-failed", action="store_true", help="with --resume: retry assets that failed")
    r.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads (cores) for Blender (0 = all); e.g. several shards on one machine",
    )
    r.add_argument("--progress", choices=("bar", "json", "none"), default="bar", help=argparse.SUPPRESS)


def preset_config(preset: str = "paper", engine: str = "eevee", **overrides: Any) -> DatagenConfig:
    """A :class:`DatagenConfig` from a preset; ``overrides`` that are None keep the preset's value."""
    if preset not in PRESETS:
        raise NearError(f"Unknown preset {preset!r}; use one of {sorted(PRESETS)}.")
    if engine not in ENGINES:
        raise NearError(f"Unknown engine {engine!r}; use one of {sorted(ENGINES)}.")
    values: dict[str, Any] = {k: v for k, v in PRESETS[preset].items() if k != "samples"}
    values["samples"] = PRESETS[preset]["samples"][engine]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["holdout_envmaps"] = tuple(sorted(set(values["holdout_envmaps"])))
    return DatagenConfig(engine=engine, preset=preset, **values)


def config_from_args(args: argparse.Namespace) -> DatagenConfig:
    """Resolve the preset and the explicit options into a :class:`DatagenConfig`."""
    names = (
        "resolution",
        "samples",
        "homog_views",
        "shaded_views",
        "cond_views",
        "input_views",
        "relit_views",
    )
    overrides = {n: getattr(args, n, None) for n in (*names, "relit_lights")}
    return preset_config(
        args.preset,
        args.engine,
        **overrides,
        holdout_envmaps=None if args.holdout_envmaps is None else tuple(args.holdout_envmaps),
        denoise=bool(args.denoise),
        denoise_prefilter=getattr(args, "denoise_prefilter", "fast"),
        holdout_renders=getattr(args, "holdout_renders", "held_out"),
        seed=int(args.seed),
        area_light_size=float(args.area_light_size),
        input_yaw_center_deg=float(args.input_yaw_center_deg),
        features=args.features,
    )


def to_argv(args: argparse.Namespace, skip: tuple[str, ...] = ("blender", "command", "rest")) -> list[str]:
    """Turn parsed options back into an argument list (the CLI forwards them to Blender)."""
    out: list[str] = []
    for key, value in vars(args).items():
        if key in skip or value is None:
            continue
        flag = "--" + {"input_yaw_center_deg": "input-yaw-center"}.get(key, key.replace("_", "-"))
        if key == "denoise":
            if not value:
                out.append("--no-denoise")
        elif isinstance(value, bool):
            if value:
                out.append(flag)
        elif isinstance(value, list | tuple):
            out.append(flag)
            out.extend(str(v) for v in value)
        else:
            out += [flag, str(value)]
    return out
