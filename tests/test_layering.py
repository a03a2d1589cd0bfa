"""The house rules of imports (docs/architecture.md): inference never imports training or
evaluation, ``near_blender`` never imports bpy, and the package has no import circles.

Imports are read from the source (``ast``), function-level ones included, so a lazy import cannot
hide a dependency; a second check imports the inference entry points in a fresh interpreter and
looks at what got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "near_blender"
# inference: what Blender and the image-to-asset path load
INFERENCE = ("pipeline", "scene", "models", "render", "sparse", "data", "utils", "export")
TRAINING = ("near_blender.train", "near_blender.eval", "near_blender.bench", "near_blender.commands")


def _module_name(path: Path, root: Path, top: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [top, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def _graph(root: Path, top: str) -> dict[str, set[str]]:
    files = {_module_name(p, root, top): p for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    return {m: {i for i in _imports(p, m) if i in files} for m, p in files.items()}


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_inference_never_imports_training_or_evaluation():
    graph = _graph(PACKAGE, "near_blender")
    inference = tuple(f"near_blender.{p}" for p in INFERENCE)
    bad = {m: sorted(i for i in deps if _is_under(i, TRAINING))
           for m, deps in graph.items() if _is_under(m, inference)}  # fmt: skip
    assert not {m: d for m, d in bad.items() if d}, bad


def test_engine_and_operators_never_import_training():
    bad = {}
    for folder in ("engine", "operators", "ui"):
        for p in (REPO / folder).rglob("*.py"):
            deps = _imports(p, _module_name(p, REPO, "near_addon"))
            hits = sorted(d for d in deps if _is_under(d, TRAINING) and not p.name.startswith("bench_"))
            if hits and "demo" not in p.parts and "datagen" not in p.parts:
                bad[str(p.relative_to(REPO))] = hits
    assert not bad, bad


def test_the_core_never_imports_bpy():
    hits = {m for m, p in ((_module_name(p, PACKAGE, "near_blender"), p) for p in PACKAGE.rglob("*.py"))
            if {"bpy", "bmesh", "mathutils"} & {i.split(".")[0] for i in _imports(p, m)}}  # fmt: skip
    assert not hits, hits


def test_no_import_circles_in_the_core():
    graph = _graph(PACKAGE, "near_blender")
    # a package's __init__ importing its own submodules is not a circle of meaning
    edges = {
        m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


@pytest.mark.parametrize("entry", ["near_blender.pipeline", "near_blender.scene"])
def test_importing_an_inference_entry_point_loads_no_training(entry):
    code = f"import sys, {entry}; print(sorted(m for m in sys.modules if m.startswith(('near_blender.train', 'near_blender.eval'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout
