"""``near bench NAME|all``: run benchmarks and write ``OUT/NAME.json`` + ``OUT/NAME.md``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import NearError
from ..bench import BENCHMARKS, NEEDS_CUDA, load, machine_info, to_markdown
from ..utils.atomic import atomic_write_json, atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", help=f"benchmarks to run: {', '.join(BENCHMARKS)} or all")
    parser.add_argument("--out", default="benchmarks", help="folder for the results files")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if "all" in args.names else args.names
    if "all" in args.names and not _has_cuda():
        skipped = [n for n in names if n in NEEDS_CUDA]
        names = [n for n in names if n not in NEEDS_CUDA]
        print(f"near bench all: no CUDA device, skipping {', '.join(skipped)}.")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise NearError(f"Unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)} or 'all'.")
    out = Path(args.out)
    for name in names:
        mod = load(name)
        print(f"near bench {name}: running ...", flush=True)
        report = mod.run(quick=args.quick)
        report.setdefault("meta", {}).update(machine_info())
        atomic_write_json(out / f"{name}.json", report)
        atomic_write_text(out / f"{name}.md", to_markdown(report))
        print(f"near bench {name}: wrote {out / name}.md")
    return 0
