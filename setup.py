"""Package layout of the ``near-blender`` wheel (the metadata is in ``pyproject.toml``).

Two top-level packages:

- ``near_blender``: the bpy-free NeAR stack, its CLI and the bundled default model;
- ``near_addon``: the extension root (this folder's ``__init__.py`` with ``engine/``, ``operators/``
  and ``ui/``), so that the Blender-side scripts the CLI runs (``near datagen``, ``near render``
  FILE.blend, ``near demo``, ``near bake``, the benchmarks) are found in an installed wheel too,
  without a source checkout (``near_blender.utils.blender_job.extension_script``).
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

EXTENSION_PACKAGES = find_packages(
    where=".", include=["engine", "engine.*", "operators", "operators.*", "ui"]
)


class BuildPy(build_py):
    """Leaves this file out of ``near_addon`` (the extension root is also the project root)."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        found = super().find_package_modules(package, package_dir)
        return [m for m in found if not (package == "near_addon" and m[1] == "setup")]


setup(
    cmdclass={"build_py": BuildPy},
    packages=[
        *find_packages(where=".", include=["near_blender", "near_blender.*"]),
        "near_addon",
        *(f"near_addon.{p}" for p in EXTENSION_PACKAGES),
    ],
    package_dir={"near_addon": "."},
    package_data={
        "near_blender": ["weights/*/*.json", "weights/*/ckpts/*.json", "weights/*/ckpts/*.safetensors"],
        "near_addon": ["blender_manifest.toml"],
    },
)
