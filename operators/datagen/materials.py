"""Material AOVs for the G-buffers: base colour, roughness and metallic read from the material.

Every material of the asset gets three AOV Output nodes (``base_color`` COLOR, ``roughness`` and
``metallic`` VALUE) fed by whatever drives the surface shader's inputs: the same texture/node
socket when the input is linked (so textured materials give textured AOVs), the input's value
when not. Supported surface graphs: Principled BSDF, Diffuse (roughness 1, metallic 0), Glossy
(metallic 1), Metallic BSDF (metallic 1), Emission (black, roughness 1), and Mix / Add Shader of
these (mixed with the same factor; Add = 50/50). Anything else keeps the defaults (grey 0.8,
roughness 0.5, metallic 0) and is reported in ``asset.json``.
"""

from __future__ import annotations

from typing import Any

import bpy

from near_blender.data.views import AOVS

DEFAULT_PROPS = {"base_color": (0.8, 0.8, 0.8), "roughness": 0.5, "metallic": 0.0}
_AOV_TAG = "near_aov"

# shader node -> property -> input socket name, or a constant
_BSDF_INPUTS: dict[str, dict[str, Any]] = {
    "ShaderNodeBsdfPrincipled": {
        "base_color": "Base Color",
        "roughness": "Roughness",
        "metallic": "Metallic",
    },
    "ShaderNodeBsdfDiffuse": {"base_color": "Color", "roughness": 1.0, "metallic": 0.0},
    "ShaderNodeBsdfAnisotropic": {"base_color": "Color", "roughness": "Roughness", "metallic": 1.0},
    "ShaderNodeBsdfGlossy": {"base_color": "Color", "roughness": "Roughness", "metallic": 1.0},
    "ShaderNodeBsdfMetallic": {"base_color": "Base Color", "roughness": "Roughness", "metallic": 1.0},
    "ShaderNodeEmission": {"base_color": (0.0, 0.0, 0.0), "roughness": 1.0, "metallic": 0.0},
}


def socket(sockets: Any, identifier: str) -> Any:
    """A node socket by identifier (``sockets["A_Float"]`` looks names up, and Mix names repeat)."""
    return next(s for s in sockets if s.identifier == identifier)


def default_material() -> Any:
    """A plain Principled material (grey 0.8, roughness 0.5) for meshes that have none."""
    mat = bpy.data.materials.get("NeAR Default") or bpy.data.materials.new("NeAR Default")
    bsdf = _principled(mat)
    bsdf.inputs["Base Color"].default_value = (*DEFAULT_PROPS["base_color"], 1.0)
    bsdf.inputs["Roughness"].default_value = DEFAULT_PROPS["roughness"]
    bsdf.inputs["Metallic"].default_value = DEFAULT_PROPS["metallic"]
    return mat


def _principled(mat: Any) -> Any:
    nt = mat.node_tree
    for n in nt.nodes:
        if n.bl_idname == "ShaderNodeBsdfPrincipled":
            return n
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    out = nt.get_output_node("ALL") or nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return bsdf


def ensure_materials(objects: list[Any]) -> int:
    """Give every mesh without a material (or with empty slots) the default material; returns how
    many slots were filled. Without it the AOVs would read 0 where Blender's default surface draws."""
    filled = 0
    for obj in objects:
        if obj.type != "MESH":
            continue
        if len(obj.material_slots) == 0:
            obj.data.materials.append(default_material())
            filled += 1
            continue
        for slot in obj.material_slots:
            if slot.material is None:
                slot.material = default_material()
                filled += 1
    return filled


def used_materials(objects: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for obj in objects:
        for slot in getattr(obj, "material_slots", []):
            if slot.material is not None:
                seen.setdefault(slot.material.name, slot.material)
    return [seen[k] for k in sorted(seen)]


def wire_aovs(mat: Any) -> dict[str, Any]:
    """Add (or replace) the three AOV outputs of ``mat``; returns what drives each of them."""
    if mat.node_tree is None:  # a material without nodes: Blender renders its viewport colour
        mat.use_nodes = True
    nt = mat.node_tree
    for n in [n for n in nt.nodes if n.get(_AOV_TAG)]:
        nt.nodes.remove(n)
    notes: list[str] = []
    out = nt.get_output_node("ALL") or nt.get_output_node("CYCLES") or nt.get_output_node("EEVEE")
    sources: dict[str, tuple[str, Any]] = {}
    if out is None or not out.inputs["Surface"].is_linked:
        notes.append("no connected Material Output; AOVs use defaults")
        sources = {k: ("value", v) for k, v in DEFAULT_PROPS.items()}
    else:
        link = out.inputs["Surface"].links[0]
        sources = _resolve_shader(nt, link.from_node, notes, depth=0)
    summary: dict[str, Any] = {"material": mat.name}
    for prop, kind in AOVS.items():
        aov = nt.nodes.new("ShaderNodeOutputAOV")
        aov[_AOV_TAG] = True
        aov.aov_name = prop
        aov.location = (
            out.location.x if out else 0.0,
            (out.location.y if out else 0.0) - 200 - 120 * len(summary),
        )
        target = aov.inputs["Color" if kind == "COLOR" else "Value"]
        how, what = sources[prop]
        if how == "link":
            nt.links.new(what, target)
            summary[prop] = {"linked": f"{what.node.name}.{what.name}"}
        else:
            if kind == "COLOR":
                target.default_value = (*tuple(what)[:3], 1.0)
                summary[prop] = [round(float(c), 6) for c in tuple(what)[:3]]
            else:
                target.default_value = float(what)
                summary[prop] = round(float(what), 6)
    if notes:
        summary["notes"] = notes
    return summary


def _resolve_shader(nt: Any, node: Any, notes: list[str], depth: int) -> dict[str, tuple[str, Any]]:
    """prop -> ("link", output socket) | ("value", constant) for the shader ``node``."""
    while node.bl_idname == "NodeReroute" and node.inputs[0].is_linked:
        node = node.inputs[0].links[0].from_node
    spec = _BSDF_INPUTS.get(node.bl_idname)
    if spec is not None:
        out: dict[str, tuple[str, Any]] = {}
        for prop, src in spec.items():
            if isinstance(src, str):
                sock = node.inputs[src]
                if sock.is_linked:
                    out[prop] = ("link", sock.links[0].from_socket)
                else:
                    v = sock.default_value
                    out[prop] = ("value", tuple(v)[:3] if prop == "base_color" else float(v))
            else:
                out[prop] = ("value", src)
        return out
    if node.bl_idname in ("ShaderNodeMixShader", "ShaderNodeAddShader") and depth < 8:
        i0, i1 = (1, 2) if node.bl_idname == "ShaderNodeMixShader" else (0, 1)
        branches = []
        for i in (i0, i1):
            s = node.inputs[i]
            if s.is_linked:
                branches.append(_resolve_shader(nt, s.links[0].from_node, notes, depth + 1))
            else:  # an empty shader input contributes nothing: use the other branch's values
                branches.append(None)
        if branches[0] is None or branches[1] is None:
            other = branches[0] or branches[1]
            return other if other is not None else {k: ("value", v) for k, v in DEFAULT_PROPS.items()}
        if node.bl_idname == "ShaderNodeMixShader":
            fac = node.inputs[0]
            factor: tuple[str, Any] = (
                ("link", fac.links[0].from_socket) if fac.is_linked else ("value", fac.default_value)
            )
        else:
            factor = ("value", 0.5)
        return {p: _mix(nt, factor, branches[0][p], branches[1][p], p == "base_color") for p in DEFAULT_PROPS}
    notes.append(f"unsupported surface node {node.name!r} ({node.bl_idname}); AOVs use defaults")
    return {k: ("value", v) for k, v in DEFAULT_PROPS.items()}


def _mix(
    nt: Any, factor: tuple[str, Any], a: tuple[str, Any], b: tuple[str, Any], colour: bool
) -> tuple[str, Any]:
    """A Mix node blending two property sources by ``factor`` (constants fold without a node)."""
    if factor[0] == "value" and a[0] == b[0] == "value":
        f = float(factor[1])
        if colour:
            return ("value", tuple((1 - f) * x + f * y for x, y in zip(a[1], b[1], strict=False)))
        return ("value", (1 - f) * a[1] + f * b[1])
    mix = nt.nodes.new("ShaderNodeMix")
    mix[_AOV_TAG] = True
    mix.data_type = "RGBA" if colour else "FLOAT"
    suffix = "Color" if colour else "Float"
    for sock_id, src in (("Factor_Float", factor), (f"A_{suffix}", a), (f"B_{suffix}", b)):
        sock = socket(mix.inputs, sock_id)
        if src[0] == "link":
            nt.links.new(src[1], sock)
        elif colour and sock_id != "Factor_Float":
            sock.default_value = (*tuple(src[1])[:3], 1.0)
        else:
            sock.default_value = float(src[1])
    return ("link", socket(mix.outputs, f"Result_{suffix}"))


def material_report(objects: list[Any]) -> list[dict[str, Any]]:
    """Wire the AOVs of every material used by ``objects``; returns one summary per material."""
    return [wire_aovs(m) for m in used_materials(objects)]
