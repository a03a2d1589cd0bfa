"""Blender-side scripts of ``near bench engine`` and ``near demo`` (run in a bpy subprocess)."""
