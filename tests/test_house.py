"""House sizes (docs/architecture.md, "Sizes"): no Python file over 600 lines and no function over
80 lines, in the package, the extension, the tools and the tests alike. A long table of data may be
named in ``DATA_TABLES`` with the reason; nothing else is exempt."""

from __future__ import annotations

import ast
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
