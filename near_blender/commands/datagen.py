"""``near datagen``: render NeAR training data with EEVEE Next / Cycles (resumable, shardable).

::

    near datagen --out DIR [--assets PATH ...] [--procedural N] [--preset tiny|paper]
                 [--engine eevee|cycles] [--resolution R] [--shard i/N] [--resume] [--blender PATH]

The work happens in Blender: this command runs ``operators/datagen/headless.py`` with
``blender -b --python-exit-code 1 --python headless.py -- ARGS`` when a Blender binary is given
(``--blender``), named by ``$BLENDER`` or on ``PATH``, else with this Python's ``bpy`` module
(``python headless.py ARGS``). One process per shard: a farm runs ``--shard i/N`` for i = 0..N-1
(e.g. a SLURM array with ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT --resume``).
Blender's own output goes to ``DIR/logs/``; the progress bar shows renders and ETA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import NearError
from ..data.config import add_arguments as add_datagen_arguments
from ..data.config import config_from_args, parse_shard, to_argv
from ..data.sources import collect_sources
from ..utils.blender_job import blender_command, extension_script, find_blender, run_logged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_datagen_arguments(parser)
    parser.add_argument(
        "--blender",
        default=None,
        metavar="PATH",
        help="Blender executable (default: $BLENDER, then 'blender' on PATH, then the bpy module)",
    )


def script_path() -> Path:
    """The Blender-side script (in the extension's ``operators/datagen``)."""
    return extension_script("operators/datagen/headless.py")


def build_command(args: argparse.Namespace) -> list[str]:
    prefix = find_blender(args.blender)
    if len(prefix) > 1 and args.threads > 0:  # a Blender binary: limit its task scheduler too
        prefix = [prefix[0], "-b", "--threads", str(args.threads), *prefix[2:]]
    forwarded = to_argv(args, skip=("blender", "command", "rest", "progress")) + ["--progress", "json"]
    return blender_command(prefix, script_path(), forwarded)


def _check(args: argparse.Namespace) -> None:
    """Fail fast (before Blender starts) on options that cannot work."""
    parse_shard(args.shard)
    config_from_args(args)
    if not collect_sources(args.assets, args.procedural, args.seed, args.library):
        raise NearError("Nothing to render: give --assets PATH ... and/or --procedural N.")
    if args.retry_failed and not args.resume:
        raise NearError("--retry-failed needs --resume.")


def run(args: argparse.Namespace) -> int:
    _check(args)
    cmd = build_command(args)
    out = Path(args.out)
    i, n = parse_shard(args.shard)
    log_path = out / "logs" / f"datagen-shard-{i}-of-{n}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    show_bar = getattr(args, "progress", "bar") != "none"
    failures: list[str] = []
    summary: dict = {}
    bar = None

    def on_event(ev: dict) -> None:
        nonlocal bar, summary
        kind = ev.get("event")
        if kind == "start" and show_bar:
            from tqdm import tqdm

            bar = tqdm(total=ev["renders"], unit="view", desc=f"near datagen {i}/{n}", dynamic_ncols=True)
        elif kind in ("render", "asset") and bar is not None:
            bar.update(ev["done"] - bar.n)
            bar.set_postfix_str(ev["id"][:32])
        if kind == "asset" and ev.get("status") == "failed":
            failures.append(f"{ev['id']}: {ev['error']}")
            if bar is not None:
                bar.write(f"failed: {ev['id']}: {ev['error']}")
        elif kind == "envmap" and ev.get("status") == "failed":
            failures.append(f"{ev['name']}: {ev['error']}")
        elif kind == "end":
            summary = ev

    run_logged(cmd, on_event, "near datagen", log_path, lambda: bar and bar.close())
    if summary:
        print(
            f"near datagen: {summary.get('done', 0)} done, {summary.get('failed', 0)} failed, "
            f"{summary.get('skipped', 0)} skipped in {summary.get('seconds', 0):.0f} s -> {out}"
        )
    for f in failures[:20]:
        print(f"  {f}", file=sys.stderr)
    if failures:
        more = f" (the first 20 above; all in {log_path})" if len(failures) > 20 else f" (see {log_path})"
        print(f"near datagen: {len(failures)} item(s) failed{more}; rerun with --resume --retry-failed "
              "after fixing them.", file=sys.stderr)  # fmt: skip
        return 1
    return 0
