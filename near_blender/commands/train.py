"""``near train stage1|stage2|stage1-samples|stage1-delight|default-model``: train the two stages
(single process or torchrun); ``stage1-samples`` writes a trained stage 1's outputs for coupled
stage-2 training; ``stage1-delight`` calibrates the delighting stage 1 of the bundled model."""

from __future__ import annotations

import argparse
import json

from .. import NearError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "stage",
        choices=["stage1", "stage2", "stage1-samples", "stage1-delight", "default-model"],
        help="what to train",
    )
    parser.add_argument("--config", help="JSON or YAML config (see configs/); overrides come after it")
    parser.add_argument("--data", help="dataset folder made by `near datagen`")
    parser.add_argument("--out", help="run folder (checkpoints, metrics.jsonl, model/)")
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument("--model", help="stage1-samples: pipeline folder whose stage 1 runs")
    parser.add_argument(
        "--inputs", type=int, help="stage1-samples / stage1-delight: input views per asset (default 2 / 6)"
    )
    parser.add_argument("--sampler-steps", type=int, help="stage1-samples: flow sampler steps")


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import init_distributed_from_env, shutdown_distributed

    init_distributed_from_env()
    try:
        result = _run_stage(args)
    except BaseException:
        shutdown_distributed(wait=False)  # the other ranks may never reach a barrier
        raise
    shutdown_distributed()
    print(json.dumps(result, indent=2, default=str))
    return 0


def _run_stage(args: argparse.Namespace) -> object:
    if args.stage == "stage2":
        from ..train.stage2 import Stage2Config, train_stage2

        cfg = Stage2Config.from_file(args.config) if args.config else Stage2Config()
        _override(cfg, args)
        if args.no_resume:
            _clear(cfg.out)
        result = train_stage2(cfg, progress=not args.no_progress)
    elif args.stage == "stage1":
        from ..train.stage1 import Stage1Config, train_stage1

        cfg = Stage1Config.from_file(args.config) if args.config else Stage1Config()
        _override(cfg, args)
        if args.no_resume:
            _clear(cfg.out)
        result = train_stage1(cfg, progress=not args.no_progress)
    elif args.stage == "stage1-samples":
        from .. import NearError
        from ..train.stage1_samples import write_stage1_samples

        if not (args.model and args.data and args.out):
            raise NearError("stage1-samples needs --model (a pipeline with stage 1), --data and --out.")
        result = write_stage1_samples(
            args.model, args.data, args.out, inputs=args.inputs or 2, steps=args.sampler_steps,
            progress=not args.no_progress,
        )  # fmt: skip
    elif args.stage == "stage1-delight":
        from .. import NearError
        from ..train.stage1_delight import fit_delight_stage1

        if not (args.data and args.out):
            raise NearError("stage1-delight needs --data (a `near datagen` folder) and --out.")
        if args.inputs is not None and args.inputs < 1:
            raise NearError(f"--inputs must be at least 1, got {args.inputs}.")
        result = fit_delight_stage1(
            args.data, args.out, inputs=args.inputs or 6, progress=not args.no_progress
        )
    else:
        from ..train.default_model import build_default_model

        result = build_default_model(progress=not args.no_progress)
    return result


def _override(cfg, args: argparse.Namespace) -> None:
    if args.data:
        cfg.data = args.data
    if args.out:
        cfg.out = args.out
    if args.steps is not None:
        if args.steps < 1:
            raise NearError(f"--steps {args.steps}: give a positive number of optimizer steps.")
        cfg.train = {**cfg.train, "max_steps": args.steps}


def _clear(out: str) -> None:
    from pathlib import Path

    ck = Path(out) / "checkpoints" / "last.pt"
    if ck.is_file():
        ck.unlink()
