"""Blender-side entry point of ``near datagen`` (one process per shard).

Run by the CLI, or by hand, either in a Blender binary or with the bpy module::

    blender -b --python-exit-code 1 --python operators/datagen/headless.py -- --out DIR [options]
    python operators/datagen/headless.py --out DIR [options]        # bpy module (pip install bpy)

Options are those of ``near datagen`` (``near_blender.data.config.add_arguments``). With a first
argument ``baked`` the script instead renders the evaluation's baked-texture baseline
(``baked --job JOB.json [--progress json|none]``, see ``operators/datagen/baked.py``). Exit status:
0 when the batch ran (per-asset failures are recorded in the manifest), 2 on a configuration
error, 1 on a crash.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the extension / repository root
PACKAGE = "near_addon"


def _bootstrap() -> None:
    """Make ``near_blender`` importable and load the extension root as package ``near_addon``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from near_blender.utils.extension_package import load_extension_package

    load_extension_package(ROOT, PACKAGE)


def _script_args(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]


def _limit_threads(argv: list[str]) -> None:
    """With ``--threads N`` under the bpy module, pin the process to N cores *before* Blender
    starts its task scheduler, so that all of Blender (not only the render threads) stays on N
    cores, e.g. several shards on one machine. (A Blender binary gets ``-t N`` instead.)"""
    if "bpy" in sys.modules or "--threads" not in argv or not hasattr(os, "sched_setaffinity"):
        return
    try:
        n = int(argv[argv.index("--threads") + 1])
    except (IndexError, ValueError):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if 0 < n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])


def main(argv: list[str] | None = None) -> int:
    import argparse

    argv = _script_args(sys.argv) if argv is None else argv
    _limit_threads(argv)
    import bpy  # noqa: F401  (Blender, or the bpy module)

    _bootstrap()
    from near_blender import NearError

    if argv[:1] == ["baked"]:
        return _baked(argv[1:])
    from near_blender.data.config import add_arguments, config_from_args, parse_shard
    from near_blender.data.sources import collect_sources

    job_mod = importlib.import_module(f"{PACKAGE}.operators.datagen.job")
    lighting = importlib.import_module(f"{PACKAGE}.operators.datagen.lighting")

    parser = argparse.ArgumentParser(prog="near datagen (Blender side)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        try:
            import OpenEXR  # noqa: F401
        except ImportError:
            raise NearError(
                "This Blender's Python has no OpenEXR package, which the data generator writes its files "
                "with. Install the near-blender extension (it bundles its wheels) or run with the bpy module "
                "(pip install bpy==5.0.1 OpenEXR==3.5.3)."
            ) from None
        cfg = config_from_args(args)
        sources = collect_sources(args.assets, args.procedural, args.seed, args.library)
        if not sources:
            raise NearError("Nothing to render: give --assets PATH ... and/or --procedural N.")
        spec = job_mod.JobSpec(
            out=Path(args.out),
            config=cfg,
            sources=sources,
            envmap_paths=lighting.find_envmaps(args.envmaps),
            shard=parse_shard(args.shard),
            resume=args.resume,
            retry_failed=args.retry_failed,
            threads=args.threads,
        )
        job = job_mod.DatagenJob(spec)
        bar = None
        for ev in job.steps():
            if args.progress == "json":
                print("NEAR_EVENT " + json.dumps(ev), flush=True)
            elif args.progress == "bar":
                if ev["event"] == "start":
                    from tqdm import tqdm

                    bar = tqdm(total=ev["renders"], unit="view", desc="near datagen")
                elif bar is not None and "done" in ev and ev["event"] != "end":
                    bar.update(ev["done"] - bar.n)
                    if ev["event"] == "asset" and ev["status"] == "failed":
                        bar.write(f"{ev['id']}: failed: {ev['error']}")
        if bar is not None:
            bar.close()
    except NearError as e:
        print(f"near datagen: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def _baked(argv: list[str]) -> int:
    import argparse

    from near_blender import NearError

    parser = argparse.ArgumentParser(prog="near eval baked (Blender side)")
    parser.add_argument("--job", required=True)
    parser.add_argument("--progress", choices=("json", "none"), default="none")
    args = parser.parse_args(argv)
    baked = importlib.import_module(f"{PACKAGE}.operators.datagen.baked")
    try:
        return baked.run_job_file(args.job, args.progress)
    except (NearError, OSError, ValueError, KeyError) as e:
        print(f"near eval baked: error: cannot run the job {args.job} ({e}).", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    if code:
        sys.exit(code)
