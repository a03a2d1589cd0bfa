"""Rendering core: cameras, environment maps, EXR IO, rasterization, tone mapping.

Imports are lazy where they pull heavy dependencies, so ``near_blender.render.camera`` and
``near_blender.render.envmap`` stay usable with numpy alone.
"""
