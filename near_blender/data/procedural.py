"""The built-in procedural asset libraries (specs only; ``operators/datagen/assets.py`` builds them).

Two seeded libraries: ``v1`` (10 primitive shapes, 4 textures; what the shipped default model was
trained on, kept frozen so that its data can be regenerated) and ``v2`` (``v1``'s shapes plus
booleans, thin parts, concavities, displacement, twists and two-part assets; bevels on any shape;
brick, gradient, magic and sticker textures besides ``v1``'s).

A spec is a JSON-ready dict, so it is recorded verbatim in ``asset.json`` and the manifest:

``{"shape": str, "smooth": bool, "dims": [x, y, z], "rotation_z_deg": float,
[v2: "sharp_angle_deg": float, "bevel": None | {"width", "segments"}, "displace": {"amplitude",
"frequency", "seed"} (bumpy_sphere), "twist_deg": float (twisted_box)],
"material": {"base_color": [r, g, b] (linear), "roughness": 0.05..1, "metallic": 0|1,
"specular": Specular IOR Level, "texture": None | {"type", "scale", "color2", "roughness2"}}}``

Textures are Blender procedural textures on object coordinates (a sticker is a disc of
``radius`` around ``center``; a gradient a ramp along ``rotation_deg``) mixing ``base_color`` and
``color2`` (and, when ``roughness2`` is set, ``roughness`` and ``roughness2``) by the texture's
factor, so that the base-colour / roughness AOVs vary over the surface.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np

from ..render.color import srgb_to_linear

SHAPES = (
    "cube",
    "uv_sphere",
    "ico_sphere",
    "cylinder",
    "cone",
    "torus",
    "suzanne",
    "bevel_cube",
    "subdiv_cube",
    "subdiv_suzanne",
)
# v2 adds: tube / bowl / l_block / holed_cube (concavities, booleans), plate / ring (thin parts),
# bumpy_sphere (displacement), twisted_box (a deformed box), stack (a box with a sphere on top).
V2_SHAPES = SHAPES + (
    "tube",
    "bowl",
    "plate",
    "ring",
    "holed_cube",
    "l_block",
    "bumpy_sphere",
    "twisted_box",
    "stack",
)
FLAT_SHAPES = ("cube", "bevel_cube", "plate", "holed_cube", "l_block", "twisted_box")  # flat shading
ALIASES = {"sphere": "uv_sphere", "monkey": "suzanne", "box": "cube"}
TEXTURES = ("noise", "checker", "voronoi", "wave")
V2_TEXTURES = TEXTURES + ("brick", "gradient", "magic", "sticker")
LIBRARIES = ("v1", "v2")
ID_PREFIX = {"v1": "proc", "v2": "proc2"}


def _random_colour(rng: np.random.Generator) -> list[float]:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.3, 0.95)
    return [round(srgb_to_linear(c), 6) for c in colorsys.hsv_to_rgb(h, s, v)]


def procedural_spec(index: int, seed: int = 0, library: str = "v1") -> dict[str, Any]:
    """The ``index``-th asset of the seeded ``library`` (``v1`` or ``v2``): shape, proportions,
    Principled material.

    Roughness is uniform in [0.05, 1], metallic is 0 or 1 (30 % metals), half of the assets get a
    procedural texture. Deterministic in (index, seed, library).
    """
    if library == "v2":
        return _v2_spec(index, seed)
    if library != "v1":
        raise ValueError(f"unknown procedural library {library!r}; use one of {', '.join(LIBRARIES)}.")
    rng = np.random.default_rng([int(seed), 7919, int(index)])
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    texture = None
    if rng.uniform() < 0.5:
        texture = {
            "type": TEXTURES[int(rng.integers(len(TEXTURES)))],
            "scale": round(float(rng.uniform(2.0, 8.0)), 4),
            "color2": _random_colour(rng),
            "roughness2": round(float(rng.uniform(0.05, 1.0)), 4) if rng.uniform() < 0.5 else None,
        }
    return {
        "shape": shape,
        "smooth": shape not in ("cube", "bevel_cube"),
        "dims": [round(float(v), 4) for v in rng.uniform(0.6, 1.0, 3)],
        "rotation_z_deg": round(float(rng.uniform(0.0, 360.0)), 3),
        "material": {
            "base_color": _random_colour(rng),
            "roughness": round(float(rng.uniform(0.05, 1.0)), 4),
            "metallic": 1.0 if rng.uniform() < 0.3 else 0.0,
            "specular": 0.5,
            "texture": texture,
        },
    }


def _v2_texture(rng: np.random.Generator) -> dict[str, Any]:
    kind = V2_TEXTURES[int(rng.integers(len(V2_TEXTURES)))]
    tex: dict[str, Any] = {
        "type": kind,
        "scale": round(float(rng.uniform(2.0, 8.0)), 4),
        "color2": _random_colour(rng),
        "roughness2": round(float(rng.uniform(0.05, 1.0)), 4) if rng.uniform() < 0.5 else None,
    }
    if kind == "sticker":  # a label: a disc of color2 around a point of the surface's bounding sphere
        d = rng.normal(size=3)
        tex["center"] = [round(float(v), 4) for v in 0.5 * d / np.linalg.norm(d)]
        tex["radius"] = round(float(rng.uniform(0.15, 0.35)), 4)
    elif kind == "gradient":  # a linear ramp along a random direction
        tex["rotation_deg"] = [round(float(v), 3) for v in rng.uniform(0.0, 360.0, 3)]
    return tex


def _v2_spec(index: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([int(seed), 7919, int(index), 2])
    shape = V2_SHAPES[int(rng.integers(len(V2_SHAPES)))]
    spec: dict[str, Any] = {
        "shape": shape,
        "smooth": shape not in FLAT_SHAPES,
        "dims": [round(float(v), 4) for v in rng.uniform(0.5, 1.0, 3)],
        "rotation_z_deg": round(float(rng.uniform(0.0, 360.0)), 3),
        "sharp_angle_deg": 40.0,
        "bevel": None,
    }
    if shape in FLAT_SHAPES and shape != "bevel_cube" and rng.uniform() < 0.5:
        spec["bevel"] = {"width": round(float(rng.uniform(0.02, 0.1)), 4), "segments": 3}
    if shape == "bumpy_sphere":
        spec["displace"] = {
            "amplitude": round(float(rng.uniform(0.03, 0.08)), 4),
            "frequency": round(float(rng.uniform(1.5, 4.0)), 4),
            "seed": int(rng.integers(1 << 16)),
        }
    if shape == "twisted_box":
        spec["twist_deg"] = round(float(rng.uniform(30.0, 120.0)), 3)
    spec["material"] = {
        "base_color": _random_colour(rng),
        "roughness": round(float(rng.uniform(0.05, 1.0)), 4),
        "metallic": 1.0 if rng.uniform() < 0.3 else 0.0,
        "specular": 0.5,
        "texture": _v2_texture(rng) if rng.uniform() < 0.6 else None,
    }
    return spec


def parse_procedural_spec(text: str) -> dict[str, Any]:
    """``proc:SHAPE[,key=value...]`` -> spec (defaults: grey 0.8, roughness 0.5, no texture).

    Keys: ``base_color=r/g/b`` (linear), ``roughness``, ``metallic``, ``specular``, ``smooth=0|1``,
    ``dims=x/y/z``, ``rotation_z_deg``, ``bevel=WIDTH``, ``twist_deg``, ``texture=TYPE`` (one of
    ``V2_TEXTURES``), ``texture_scale``, ``color2=r/g/b``, ``roughness2``. Shapes are those of
    ``V2_SHAPES``. Raises ValueError naming the bad part.
    """
    body = text[len("proc:") :] if text.startswith("proc:") else text
    parts = [p.strip() for p in body.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{text!r}: give a shape after 'proc:', one of {', '.join(V2_SHAPES)}.")
    shape = ALIASES.get(parts[0].lower(), parts[0].lower())
    if shape not in V2_SHAPES:
        raise ValueError(f"{text!r}: unknown shape {parts[0]!r}; use one of {', '.join(V2_SHAPES)}.")
    mat: dict[str, Any] = {"base_color": [0.8, 0.8, 0.8], "roughness": 0.5, "metallic": 0.0, "specular": 0.5}
    spec: dict[str, Any] = {
        "shape": shape,
        "smooth": shape not in FLAT_SHAPES,
        "dims": [1.0, 1.0, 1.0],
    }
    spec["rotation_z_deg"] = 0.0
    tex: dict[str, Any] = {}
    for kv in parts[1:]:
        if "=" not in kv:
            raise ValueError(f"{text!r}: {kv!r} is not key=value.")
        k, v = (s.strip() for s in kv.split("=", 1))
        try:
            if k in ("base_color", "color2"):
                rgb = [float(x) for x in v.split("/")]
                if len(rgb) != 3:
                    raise ValueError
                (mat if k == "base_color" else tex)[k] = rgb
            elif k in ("roughness", "metallic", "specular"):
                mat[k] = float(v)
            elif k == "roughness2":
                tex[k] = float(v)
            elif k == "texture":
                if v not in V2_TEXTURES:
                    raise ValueError
                tex["type"] = v
            elif k == "texture_scale":
                tex["scale"] = float(v)
            elif k == "smooth":
                spec["smooth"] = v.lower() in ("1", "true", "yes")
            elif k == "dims":
                dims = [float(x) for x in v.split("/")]
                if len(dims) != 3 or min(dims) <= 0:
                    raise ValueError
                spec["dims"] = dims
            elif k == "rotation_z_deg":
                spec["rotation_z_deg"] = float(v)
            elif k == "bevel":
                spec["bevel"] = {"width": float(v), "segments": 3} if float(v) > 0 else None
            elif k == "twist_deg":
                spec["twist_deg"] = float(v)
            else:
                raise KeyError(k)
        except KeyError:
            raise ValueError(f"{text!r}: unknown key {k!r}.") from None
        except ValueError:
            raise ValueError(f"{text!r}: bad value {v!r} for {k!r}.") from None
    if not 0.0 <= mat["roughness"] <= 1.0 or not 0.0 <= mat["metallic"] <= 1.0:
        raise ValueError(f"{text!r}: roughness and metallic must be in [0, 1].")
    if tex:
        if "type" not in tex:
            raise ValueError(f"{text!r}: texture settings given without texture=TYPE.")
        tex.setdefault("scale", 4.0)
        tex.setdefault("color2", [0.1, 0.1, 0.1])
        tex.setdefault("roughness2", None)
        mat["texture"] = tex
    else:
        mat["texture"] = None
    spec["material"] = mat
    return spec
