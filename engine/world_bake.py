"""Any world that Cycles renders lights NeAR: worlds NeAR cannot read exactly are baked to a map.

A world that is one Environment Texture (optionally rotated about Z) or a plain colour is read
exactly by :func:`.scene_bridge.environment_from_world`. Anything else -- a Sky Texture, a Mix of two
HDRIs, a Gradient, Light Path tricks -- is rendered alone by Cycles through a panoramic
equirectangular camera at the origin looking along +X with Z up (the layout of
:mod:`near_blender.render.envmap`), :data:`BAKE_SIZE` pixels at :data:`BAKE_SAMPLES` samples, in a
temporary scene that holds no objects. The map is cached by a signature of the world's node graph
(every node's settings and input values, the links, the images' identities, and the frame when the
world is animated), so an unchanged world bakes once per process; changing any node value bakes
again. A bake renders with Cycles: in this Blender when nothing else renders (about a second at the
default size on 2 CPU cores, ``near bench world``), else -- during F12, and for the viewport, whose
worker must not touch bpy -- in a separate Blender process from a temporary library of the world
(:class:`PendingBake`: prepared on the main thread, run on any thread).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from near_blender import NearError
from near_blender.render.envmap import Environment, sanitize_radiance

from . import scene_bridge
from .world_bake_job import render_world_exr

BAKE_SIZE = (1024, 512)  # width, height: the lighting conditioning reads a few hundred rows at most
BAKE_SAMPLES = 4
MAX_CACHED = 8


def world_signature(world: Any, frame: int | None = None) -> str:
    """A hash of everything in ``world`` that changes its radiance (node settings and input values,
    links, images' names, paths, sizes and edit state); the frame counts when the world is animated."""
    parts: list[str] = [world.name_full]
    tree = world.node_tree
    for node in sorted(tree.nodes, key=lambda n: n.name):
        parts.append(f"node {node.name} {node.bl_idname} mute={node.mute}")
        for prop in node.bl_rna.properties:
            if prop.identifier in _SKIPPED_PROPERTIES or prop.type in ("POINTER", "COLLECTION"):
                continue
            parts.append(f"  {prop.identifier}={_value(getattr(node, prop.identifier, None))}")
        image = getattr(node, "image", None)
        if image is not None:
            parts.append(
                f"  image={image.name_full} {image.filepath} {tuple(image.size)} dirty={image.is_dirty}"
            )
        for sock in node.inputs:
            if hasattr(sock, "default_value") and not sock.is_linked:
                parts.append(f"  in {sock.identifier}={_value(sock.default_value)}")
    for link in tree.links:
        parts.append(f"link {link.from_node.name}.{link.from_socket.identifier} -> "
                     f"{link.to_node.name}.{link.to_socket.identifier}")  # fmt: skip
    animated = any(getattr(x, "animation_data", None) and x.animation_data.action for x in (world, tree))
    if animated and frame is not None:
        parts.append(f"frame {frame}")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


_SKIPPED_PROPERTIES = {"rna_type", "name", "label", "location", "location_absolute", "width", "height",
                       "dimensions", "select", "show_options", "show_preview", "hide", "show_texture",
                       "color", "use_custom_color", "warning_propagation"}  # fmt: skip


def _value(v: Any) -> str:
    """A stable text of a property value (floats rounded; vectors and colours as tuples)."""
    if isinstance(v, float):
        return repr(round(v, 7))
    if isinstance(v, (str, int, bool, set, frozenset)) or v is None:
        return repr(sorted(v) if isinstance(v, (set, frozenset)) else v)
    try:
        return repr(tuple(round(float(x), 7) for x in v))
    except (TypeError, ValueError):
        return repr(v)


@dataclass(frozen=True)
class PendingBake:
    """A bake prepared on the main thread (the world written to a temporary library and the command
    that renders it in a separate Blender); :meth:`run` may then run on any thread."""

    world_name: str
    signature: str
    folder: Path
    command: tuple[str, ...]

    def run(self) -> np.ndarray:
        """Render the map (blocking; no bpy), return it repaired, and remove the temporary files."""
        import subprocess

        from near_blender.render import exr

        try:
            proc = subprocess.run(list(self.command), capture_output=True, text=True, timeout=600)
            out = self.folder / "world.exr"
            if proc.returncode != 0 or not out.is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise NearError(
                    f"Baking world {self.world_name!r} in a separate Blender failed: {' | '.join(tail)}"
                )
            channels = exr.read_exr_channels(out)
            return sanitize_radiance(np.stack([channels[c] for c in "RGB"], axis=-1))[0]
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def prepare_bake(
    world: Any, signature: str, size: tuple[int, int] = BAKE_SIZE, samples: int = BAKE_SAMPLES
) -> PendingBake:
    """Write ``world`` (and what it uses) to a temporary library and build the bake command (main thread)."""
    import sys

    import bpy

    folder = Path(tempfile.mkdtemp(prefix="near-world-bake-"))
    library = folder / "world.blend"
    bpy.data.libraries.write(str(library), {world}, path_remap="ABSOLUTE", fake_user=True)
    script = Path(__file__).with_name("world_bake_job.py")
    args = [str(library), world.name, str(size[0]), str(size[1]), str(samples), str(folder / "world.exr")]
    if bpy.app.binary_path:  # a Blender binary
        cmd = [bpy.app.binary_path, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
               "--", *args]  # fmt: skip
    else:  # Blender as a Python module
        cmd = [sys.executable, str(script), *args]
    return PendingBake(world.name, signature, folder, tuple(cmd))


def bake_world(
    world: Any, size: tuple[int, int] = BAKE_SIZE, samples: int = BAKE_SAMPLES, in_render: bool = False
) -> np.ndarray:
    """Render ``world`` alone with Cycles to an equirectangular radiance map ``[H, W, 3]`` (float32,
    scene-linear, top row first, image centre = +X, Z up; NaN / negatives repaired). Main thread only.
    Outside a render it renders in this Blender; ``in_render`` (F12, whose engine asks for the world)
    or while another render runs, in a separate Blender process: a render cannot start another inside
    itself."""
    import bpy

    from near_blender.render import exr

    if in_render or bpy.app.is_job_running("RENDER"):
        return prepare_bake(world, "", size, samples).run()
    folder = Path(tempfile.mkdtemp(prefix="near-world-bake-"))
    out = folder / "world.exr"
    try:
        render_world_exr(world, size[0], size[1], samples, out)
        if not out.is_file():
            raise NearError(f"Baking world {world.name!r} with Cycles wrote no image.")
        channels = exr.read_exr_channels(out)
        return sanitize_radiance(np.stack([channels[c] for c in "RGB"], axis=-1))[0]
    except RuntimeError as e:
        raise NearError(f"Baking world {world.name!r} with Cycles failed: {e}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class WorldBaker:
    """The baked maps of this process, by :func:`world_signature` (most recent :data:`MAX_CACHED`);
    thread-safe (the viewport's worker finishes bakes the main thread prepared)."""

    def __init__(self, size: tuple[int, int] = BAKE_SIZE, samples: int = BAKE_SAMPLES) -> None:
        self.size, self.samples = size, samples
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bakes = 0

    def cached(self, world_name: str, signature: str) -> Environment | None:
        with self._lock:
            if signature not in self._maps:
                return None
            self._maps.move_to_end(signature)
            return Environment(
                self._maps[signature], 0.0, world_name, {"source": "baked", "signature": signature}
            )

    def store(self, world_name: str, signature: str, radiance: np.ndarray) -> Environment:
        with self._lock:
            self._maps[signature] = radiance
            self.bakes += 1
            while len(self._maps) > MAX_CACHED:
                self._maps.popitem(last=False)
        return Environment(radiance, 0.0, world_name, {"source": "baked", "signature": signature})

    def environment(
        self, world: Any, frame: int | None = None, in_render: bool = False, progress: Any = None
    ) -> Environment:
        """The world as an :class:`Environment`: read exactly when NeAR understands its graph,
        else baked (cached). Errors other than an unsupported graph (no world, a missing image) stay."""
        try:
            return scene_bridge.environment_from_world(world)
        except scene_bridge.UnsupportedWorldGraph:
            pass
        key = world_signature(world, frame)
        env = self.cached(world.name, key)
        if env is None:
            if progress is not None:
                progress(0.0, f"baking world {world.name!r} with Cycles")
            env = self.store(world.name, key, bake_world(world, self.size, self.samples, in_render))
        return env

    def finish(self, pending: PendingBake) -> Environment:
        """Run a prepared bake (any thread) and cache its map."""
        return self.cached(pending.world_name, pending.signature) or self.store(
            pending.world_name, pending.signature, pending.run()
        )


_BAKER = WorldBaker()


def world_baker() -> WorldBaker:
    """The process's one :class:`WorldBaker` (F12, batch renders and the viewport share it)."""
    return _BAKER
