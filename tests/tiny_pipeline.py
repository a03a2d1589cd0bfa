"""A complete, tiny, randomly initialised NeAR pipeline for tests (now shipped in
``near_blender.models.tiny_pipeline`` so that benchmarks and the demo can fall back to it)."""

from __future__ import annotations

from near_blender.models.tiny_pipeline import build_tiny_pipeline

__all__ = ["build_tiny_pipeline"]
