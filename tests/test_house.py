"""House sizes (docs/architecture.md, "Sizes"): no Python file over 600 lines and no function over
80 lines, in the package, the extension, the tools and the tests alike. A long table of data may be
named in ``DATA_TABLES`` with the reason; nothing else is exempt."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("near_blender", "engine", "operators", "ui", "tools", "tests")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
DATA_TABLES: dict[str, str] = {}  # "path::function" -> why it is a table of data, not logic


def _python_files() -> list[Path]:
    files = [REPO / "__init__.py", REPO / "setup.py"]
    for top in SOURCES:
        files += [p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def _long_functions(path: Path) -> list[str]:
    rel = path.relative_to(REPO).as_posix()
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and f"{rel}::{node.name}" not in DATA_TABLES:
                out.append(f"{rel}::{node.name} ({lines} lines)")
    return out


def test_the_scan_sees_the_code():
    files = _python_files()
    assert len(files) > 200 and REPO / "near_blender" / "pipeline.py" in files


def test_no_file_over_600_lines():
    long = [
        f"{p.relative_to(REPO)} ({n} lines)"
        for p in _python_files()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert not long, "split these files by concern: " + ", ".join(long)


def test_no_function_over_80_lines():
    long = [f for p in _python_files() for f in _long_functions(p)]
    assert not long, "split these functions into named steps: " + ", ".join(long)


def _doc_paths(text: str) -> list[str]:
    """File and folder paths the house plan names in backticks (``near_blender/x.py``, ``engine/``,
    ``models/y.py`` relative to ``near_blender/``)."""
    tokens = re.findall(r"`([^`\s]+)`", text)
    return [t for t in tokens if "/" in t and (t.endswith((".py", "/")) or "." not in t.rsplit("/", 1)[-1])]


def test_house_plan_names_only_what_exists():
    """docs/architecture.md: every path, dotted module and ``path (`name`)`` it names exists."""
    import importlib.util

    text = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for rel in _doc_paths(text):
        rel = rel.split(".py")[0] + ".py" if ".py" in rel else rel  # `x.py` or `x.py.function`
        if not ((REPO / rel).exists() or (REPO / "near_blender" / rel).exists()):
            missing.append(rel)
    for mod in set(re.findall(r"`(near_blender(?:\.\w+)+)`", text)):
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:  # a function named after its module, e.g. near_blender.render.rasterize
            parent, _, name = mod.rpartition(".")
            path = REPO / (parent.replace(".", "/") + ".py")
            found = (
                path.is_file() and re.search(rf"^(def|class) {name}\b", path.read_text(), re.M) is not None
            )
        if not found:
            missing.append(mod)
    # rows "`path.py` (`name`, `name`)": each name is defined in that file
    for path, names in re.findall(r"`([\w/]+\.py)` \(([^)]*)\)", text):
        source = (REPO / path).read_text()
        for name in re.findall(r"`(\w+)`", names):
            if not re.search(rf"^\s*(def|class) {name}\b|^{name}\s*[:=]", source, re.M):
                missing.append(f"{path}::{name}")
    # every CamelCase or CONSTANT name in backticks is defined somewhere (or is a registry name)
    code = "\n".join(p.read_text() for p in _python_files())
    names = set(re.findall(r"`([A-Z]\w+)`", text)) - {"LH"}
    for name in names:
        if not re.search(rf'^\s*class {name}\b|^{name}\s*[:=]|"{name}"', code, re.M):
            missing.append(name)
    assert not missing, f"docs/architecture.md names what the code does not have: {missing}"
    assert len(_doc_paths(text)) > 30 and len(names) > 8  # the scan sees the plan's paths and names
