"""Training data for NeAR, bpy-free (see docs/architecture.md).

``config`` (options and presets of ``near datagen``), ``sources`` and ``procedural`` (what to
render, stable asset ids), ``sampling`` (seeded cameras and lights, the per-asset render plan),
``layout`` (dataset folder, manifest, resume, shards), ``views`` (the view files), ``voxelize``,
``backproject``, ``features`` and ``slatgen`` (64^3 surface voxels and SLAT files), ``shadow``
(the shadow G-buffer). The Blender side lives in the extension's ``operators/datagen``.
"""
