"""``near info``: versions, devices and which optional backends are usable."""

from __future__ import annotations

import argparse
import importlib
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    import torch

    from .. import __version__

    print(f"near-blender {__version__} on Python {platform.python_version()} ({platform.machine()})")
    print(f"torch {torch.__version__}; CUDA available: {torch.cuda.is_available()}")
    for mod in ("gsplat", "spconv", "peft", "OpenEXR", "simple_ocio", "huggingface_hub", "bpy"):
        try:
            m = importlib.import_module(mod)
            print(f"  {mod:16s} {getattr(m, '__version__', 'installed')}")
        except Exception as e:  # report, never fail
            print(f"  {mod:16s} unavailable ({type(e).__name__})")
    return 0
