"""``crnn``: one subcommand per pipeline step (the container's contract), plus ``pipeline run|compile``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from crnn.config import PRESETS, recipe_for
from crnn.data.synthetic import SyntheticSpec


def _tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; none: no tracking)")
    parser.add_argument("--parent-run-id", default=None, help="MLflow run of the pipeline run, if any")


def _benchmark_arg(value: str) -> tuple[str, Path]:
    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {value!r}")
    return name, Path(folder)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crnn", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("download", help="fetch, verify and extract datasets")
    p.add_argument("dataset", choices=["synthetic"], help="what to download")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    p.add_argument("--train-size", type=int, default=SyntheticSpec.train_size)
    p.add_argument("--val-size", type=int, default=SyntheticSpec.val_size)
    p.add_argument("--test-size", type=int, default=SyntheticSpec.test_size)
    _tracking_args(p)

    p = commands.add_parser("convert", help="downloaded datasets -> TFRecord shards + manifest.json")
    p.add_argument("--raw", type=Path, required=True, help="the download step's output folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shard-size", type=int, default=10_000)
    _tracking_args(p)

    p = commands.add_parser("train", help="train the CRNN on converted shards")
    p.add_argument("--train", type=Path, required=True, help="converted training split")
    p.add_argument("--val", type=Path, default=None, help="converted validation split")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="per replica")
    p.add_argument("--learning-rate", type=float, help="per 64 samples; scaled with the global batch")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the latest checkpoint in --out (default)")
    _tracking_args(p)

    p = commands.add_parser("evaluate", help="per-benchmark word accuracy and NED")
    p.add_argument("--model", type=Path, required=True, help="an exported model folder")
    p.add_argument("--benchmark", type=_benchmark_arg, action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--out", type=Path, required=True)
    _tracking_args(p)

    p = commands.add_parser("register", help="log the model to MLflow and register a version")
    p.add_argument("--model", type=Path, required=True, help="an exported model folder")
    p.add_argument("--report", type=Path, action="append", required=True, help="report.json (repeatable)")
    p.add_argument("--name", default="crnn")
    _tracking_args(p)

    p = commands.add_parser("predict", help="print the text of each image")
    p.add_argument("--model", type=Path, required=True, help="an exported model folder")
    p.add_argument("images", type=Path, nargs="+", help="image files or folders of images")

    pipeline = commands.add_parser("pipeline", help="run or compile the KFP pipeline").add_subparsers(
        dest="pipeline_command", required=True)
    p = pipeline.add_parser("run", help="run the whole pipeline locally with kfp.local")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output root (default: outputs)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--steps", type=int, default=0, help="0: the preset's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=SyntheticSpec.train_size)
    p.add_argument("--test-size", type=int, default=SyntheticSpec.test_size)
    p.add_argument("--tracking-uri", default=None, help="default: a SQLite store under --out")
    p = pipeline.add_parser("compile", help="write the compiled pipeline YAML")
    p.add_argument("--out", type=Path, default=Path("pipelines/crnn_pipeline.yaml"))
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "pipeline":
        _run_pipeline(args)
        return
    from crnn import steps
    from crnn.tracking import Tracking

    tracking = {"tracking": Tracking(getattr(args, "tracking_uri", None), getattr(args, "parent_run_id", None))}
    if args.command == "download":
        spec = SyntheticSpec(args.seed, args.train_size, args.val_size, args.test_size)
        for dataset in steps.download(args.out, spec, **tracking):
            print(f"{dataset['name']:<10} sha256 {dataset['sha256']}  {dataset['url']}")
    elif args.command == "convert":
        for key, manifest in steps.convert(args.raw, args.out, args.shard_size, **tracking).items():
            print(f"{key:<16} {manifest['num_samples']:>8} samples  skipped {manifest['skipped'] or 'none'}")
    elif args.command == "train":
        recipe = recipe_for(args.preset, steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                            checkpoint_every=args.checkpoint_every, nesterov=args.nesterov)
        result = steps.train(recipe, args.train, args.out, val_dir=args.val, resume=args.resume, **tracking)
        print(f"trained {result.steps} steps, exported to {result.export_dir}")
    elif args.command == "evaluate":
        from crnn.evaluate.report import format_table

        print(format_table(steps.evaluate(args.model, dict(args.benchmark), args.out, **tracking)), end="")
    elif args.command == "register":
        reports = [json.loads(path.read_text()) for path in args.report]  # a file each, any name
        print(f"registered {args.name} version {steps.register(args.model, reports, name=args.name, **tracking)}")
    elif args.command == "predict":
        _predict(args.model, args.images)


def _run_pipeline(args: argparse.Namespace) -> None:
    if args.pipeline_command == "run":
        from pipelines.local_run import run_locally

        run_locally(args.out, tracking_uri=args.tracking_uri, preset=args.preset, steps=args.steps, seed=args.seed,
                    train_size=args.train_size, test_size=args.test_size)
    else:
        from pipelines.crnn_pipeline import compile_pipeline

        print(f"wrote {compile_pipeline(args.out)}")


def _predict(model_dir: Path, paths: list[Path]) -> None:
    from crnn.data.readers import decode_image
    from crnn.model.export import Recognizer

    files = [f for p in paths for f in (sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p])]
    images, readable = [], []
    for file in files:
        image = decode_image(file.read_bytes()) if file.is_file() else None
        if image is None:
            print(f"{file}\t<unreadable image>", file=sys.stderr)
        else:
            images.append(image)
            readable.append(file)
    for file, text in zip(readable, Recognizer(model_dir).read(images), strict=True):
        print(f"{file}\t{text}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"crnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
