"""near-blender: the NeAR neural render engine and tools as a Blender extension.

Blender imports this package (as ``bl_ext.<repository>.near_blender``); it only registers and
unregisters the extension's classes. The neural stack itself is the bpy-free ``near_blender``
package, bundled as a wheel.
"""

from __future__ import annotations

from . import engine, operators, ui

_modules = (engine, operators, ui)


def register() -> None:
    for m in _modules:
        m.register()


def unregister() -> None:
    for m in reversed(_modules):
        m.unregister()
