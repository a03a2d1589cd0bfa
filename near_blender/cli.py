"""The ``near`` command: one sub-command per job, each in its own module under ``commands/``.

A sub-command module defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their sub-command runs, so ``near --help`` is instant and a missing optional
dependency of one command never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import NearError, __version__

# name -> (module under near_blender.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "render": (
        "render",
        "render frames of a .blend with the NeAR engine (batch, animation, resume), or an LH-SLAT "
        "asset (.npz) under an HDRI and a camera JSON, without Blender",
    ),
    "datagen": ("datagen", "render training data with EEVEE Next / Cycles (resumable, shardable)"),
    "train": ("train", "train stage 1 (LH-SLAT flow + LoRA) or stage 2 (decoders)"),
    "eval": ("evaluate", "evaluate the paper's four tasks (PSNR / SSIM / LPIPS)"),
    "import-image": ("import_image", "turn an image + geometry prior into an LH-SLAT (.npz)"),
    "fit-camera": ("fit_camera", "fit the camera that took a photo to the geometry prior (silhouette IoU)"),
    "camera-from-blend": ("camera_from_blend", "write the camera a .blend renders (F12) as a camera JSON"),
    "export-ply": ("export_ply", "an LH-SLAT asset's relit 3D Gaussians as a 3D Gaussian Splatting .ply"),
    "bake": ("bake", "bake an LH-SLAT asset's base colour, roughness and metallic onto its mesh (.glb)"),
    "bench": ("bench", "run benchmarks and write their results files"),
    "demo": ("demo", "build the demo scene and render it with NeAR and EEVEE (make demo)"),
    "info": ("info", "print versions, devices and optional backends"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(f"{__package__}.commands.{module}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="near",
        description="NeAR: relightable 3D assets from single images (the near-blender stack).",
    )
    parser.add_argument("--version", action="version", version=f"near-blender {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = _load(name) if name in _requested() else None
        if mod is not None:
            mod.add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _requested() -> set[str]:
    # Only the sub-command actually invoked gets its full argument parser (lazy imports).
    return {a for a in sys.argv[1:2] if a in COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args()
    if not args.command:
        parser.print_help()
        return 0
    mod = _load(args.command)
    try:
        return int(mod.run(args) or 0)
    except NearError as e:
        print(f"near {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"near {args.command}: cancelled.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
