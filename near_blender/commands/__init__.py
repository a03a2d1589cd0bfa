"""Sub-commands of the ``near`` CLI (see :mod:`near_blender.cli`)."""
