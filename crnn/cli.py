"""``crnn``: one subcommand per pipeline step (the container's contract), ``launch-npu`` to start one process per
Ascend NPU, and the commands of plugins (``pipeline run|compile|submit``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from crnn.config import DEVICES, PRECISIONS, PRESETS, Recipe, recipe_for
from crnn.data.catalog import FILTERS
from crnn.data.readers import FORMATS
from crnn.data.shards import DEFAULT_SHARD_SIZE
from crnn.data.synthetic import SyntheticSpec
from crnn.registry.gate import DEFAULT_MAX_DROP_POINTS, DEFAULT_MIN_AVERAGE
from crnn.registry.register import DEFAULT_MODEL_NAME
from crnn.tracking import Tracking
from crnn.train.ascend.launcher import launch
from crnn.train.ascend.rank_table import HCCN_CONF, POD_ANNOTATIONS, RANK_TABLE_TIMEOUT_S, local_rank_envs

# Entry-point group of command plugins: each is a function add_commands(commands) that adds its subcommands
# (pyproject.toml: `pipeline`, from pipelines.cli), so that the library need not know the pipeline.
PLUGINS = "crnn.commands"
MODEL_HELP = ("an exported model folder, an MLflow model folder, or an MLflow URI: models:/crnn@champion, "
              "models:/crnn/3, runs:/RUN_ID/model")


def _tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; none: no tracking, even where "
                             "that is set)")
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
    _add_download(commands)
    _add_convert(commands)
    _add_catalog(commands)
    _add_launch_npu(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_register(commands)
    _add_predict(commands)
    _add_tracking_replay(commands)
    _add_plugins(commands)
    return parser


def _step_tracking(args: argparse.Namespace) -> Tracking:
    """Where a step logs: --tracking-uri and --parent-run-id."""
    return Tracking(args.tracking_uri, args.parent_run_id)


def _add_download(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("download", help="fetch, verify and extract datasets")
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="catalog names (see `crnn catalog`), 'synthetic', or 'custom' with --source")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", help="fetch from this URL instead (https, http, s3, file or a path)")
    p.add_argument("--mirror", help="fetch catalog files from BASE/<dataset>/<file> (HTTP or S3), same checksums")
    p.add_argument("--format", dest="fmt", choices=sorted(FORMATS), help="format of custom data")
    p.add_argument("--name", default="custom", help="the name custom data is filed under (default: custom)")
    p.add_argument("--role", choices=["train", "benchmark"], default="benchmark", help="what custom data is for")
    checksum = p.add_mutually_exclusive_group()
    checksum.add_argument("--sha256", help="expected digest of custom data")
    checksum.add_argument("--md5", help="expected digest of custom data")
    p.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    p.add_argument("--train-size", type=int, default=SyntheticSpec.train_size)
    p.add_argument("--val-size", type=int, default=SyntheticSpec.val_size)
    p.add_argument("--test-size", type=int, default=SyntheticSpec.test_size)
    _tracking_args(p)
    p.set_defaults(handler=_download)


def _download(args: argparse.Namespace) -> None:
    from crnn import steps

    spec = SyntheticSpec(args.seed, args.train_size, args.val_size, args.test_size)
    records = steps.download(args.out, args.datasets, spec, mirror=args.mirror, source=args.source, fmt=args.fmt,
                             sha256=args.sha256, md5=args.md5, name=args.name, role=args.role,
                             tracking=_step_tracking(args))
    for record in records:
        for file in record["files"]:
            print(f"{record['name']:<16} {file['name']:<36} sha256 {file['sha256']}  {file['url']}")


def _add_convert(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("convert", help="dataset splits -> TFRecord shards + manifest.json")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--raw", type=Path, help="a download folder: convert its splits (see --split)")
    source.add_argument("--input", type=Path, help="one split in --format: its index file, or a folder holding it")
    p.add_argument("--split", action="append", metavar="DATASET/SPLIT", help="with --raw: only these (repeatable)")
    p.add_argument("--format", dest="fmt", choices=sorted(FORMATS), help="with --input: the split's format")
    p.add_argument("--images", type=Path, help="with --input: where image paths point (default: beside the index)")
    p.add_argument("--filter", choices=FILTERS, help="with --input: a benchmark's subset rule")
    p.add_argument("--unfiltered", action="store_true", help="with --input: keep every label")
    p.add_argument("--role", choices=["train", "benchmark"], help="with --input: train data also drops labels "
                   "CTC cannot align (default: train for mjsynth, else benchmark)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help="index items (lines, LMDB samples) per shard")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    _tracking_args(p)
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> None:
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {args.shard_size}")
    from crnn import steps

    if args.input is not None:
        manifests = {str(args.out): _convert_one(args)}
    else:
        manifests = steps.convert(args.raw, args.out, args.split, args.shard_size, args.workers,
                                  tracking=_step_tracking(args))
    for key, manifest in manifests.items():
        print(f"{key:<24} {manifest['num_samples']:>8} samples  skipped {manifest['skipped'] or 'none'}")


def _add_catalog(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("catalog", help="list the datasets the catalog knows").set_defaults(handler=_catalog)


def _catalog(args: argparse.Namespace) -> None:
    from crnn.data.catalog import load_catalog

    for name, entry in load_catalog().items():
        print(f"{name:<16} {entry.format:<8} {entry.role:<10} splits: {', '.join(entry.splits)}")


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train the CRNN on converted shards")
    p.add_argument("--train", type=Path, required=True, action="append",
                   help="a converted training split (repeatable: several sets train together)")
    p.add_argument("--val", type=Path, default=None, help="converted validation split")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default=Recipe.preset)
    p.add_argument("--steps", type=int, help="the steps to train, in full (lifts the preset's time budget)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="train fewer than --steps where they would take longer here (the quick preset has one)")
    p.add_argument("--batch-size", type=int, help="per replica")
    p.add_argument("--learning-rate", type=float, help="per 64 samples; scaled with the global batch")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--keep-checkpoints", type=int, help="how many of the latest checkpoints to keep")
    p.add_argument("--log-every", type=int, help="steps per logged window of metrics")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the latest checkpoint in --out (default)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="cpu/gpu: replicas in this process (several workers from TF_CONFIG); npu: one process "
                        "per NPU, started by `crnn launch-npu`")
    p.add_argument("--num-devices", type=int, default=1, help="replicas per worker (cpu: logical CPU devices)")
    p.add_argument("--precision", choices=PRECISIONS, help="mixed_float16 adds dynamic loss scaling")
    _tracking_args(p)
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> None:
    from crnn import steps
    from crnn.train.devices import make_backend

    recipe = recipe_for(args.preset, steps=args.steps, batch_size=args.batch_size,
                        learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                        log_every=args.log_every, nesterov=args.nesterov, precision=args.precision,
                        time_budget_s=args.time_budget)
    backend = make_backend(args.device, args.num_devices, precision=recipe.train.precision)
    print(f"training on {backend.replicas} replica(s) ({backend.device}, {backend.workers} worker(s)), "
          f"global batch {recipe.train.batch_size * backend.replicas} "
          f"({recipe.train.batch_size} per replica)", flush=True)
    result = steps.train(recipe, args.train, args.out, val_dir=args.val, resume=args.resume, backend=backend,
                         tracking=_step_tracking(args))
    print(f"trained {result.steps} steps, exported to {result.export_dir}")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="per-benchmark word accuracy and NED")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--benchmark", type=_benchmark_arg, action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--out", type=Path, required=True)
    _tracking_args(p)
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> None:
    from crnn import steps
    from crnn.evaluate.report import format_table
    from crnn.registry.locate import local_export
    from crnn.tracking import resolve_tracking_uri

    model = local_export(args.model, resolve_tracking_uri(args.tracking_uri), args.out / "model")
    report = steps.evaluate(model, dict(args.benchmark), args.out, tracking=_step_tracking(args))
    print(format_table(report), end="")


def _add_register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("register", help="register the model (logging it first where training did not) as a "
                            "version in MLflow's registry, and gate it")
    p.add_argument("--model", type=Path, required=True, help="an exported model folder")
    p.add_argument("--report", type=Path, action="append", required=True, help="report.json (repeatable)")
    p.add_argument("--name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--min-average", type=float, default=DEFAULT_MIN_AVERAGE,
                   help="gate: the least average accuracy (0-1; default %(default)s, as the pipeline's)")
    p.add_argument("--max-drop-points", type=float, default=DEFAULT_MAX_DROP_POINTS,
                   help="gate: how far (percentage points) a benchmark may fall below the champion's")
    p.add_argument("--pipeline-run-id", help="tag the version with this pipeline run; a retry of the same "
                   "pipeline run reuses the version it registered")
    _tracking_args(p)
    p.set_defaults(handler=_register)


def _register(args: argparse.Namespace) -> None:
    reports = [json.loads(path.read_text()) for path in args.report]  # a file each, any name
    from crnn import steps
    from crnn.registry.gate import GateRule
    from crnn.registry.register import VERSION_PIPELINE_RUN_TAG

    tags = {VERSION_PIPELINE_RUN_TAG: args.pipeline_run_id} if args.pipeline_run_id else None
    version, decision = steps.register(args.model, reports, name=args.name, tags=tags,
                                       rule=GateRule(args.min_average, args.max_drop_points),
                                       tracking=_step_tracking(args))
    print(f"registered {args.name} version {version} as candidate")
    print(decision.format_table())


def _add_predict(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("predict", help="print the text of each image")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--tracking-uri", default=None, help="for models:/ URIs (default: $MLFLOW_TRACKING_URI)")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> None:
    _print_texts(args.model, args.images, args.batch_size, args.tracking_uri)


def _add_tracking_replay(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("tracking-replay", help="send run data spooled during a tracking outage")
    p.add_argument("spool", type=Path, help="a <run id>.jsonl file named in a step's log")
    p.add_argument("--run-id", help="default: the file's name")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    p.set_defaults(handler=_tracking_replay)


def _tracking_replay(args: argparse.Namespace) -> None:
    from crnn.tracking import replay_spool, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if not uri:
        raise ValueError("tracking-replay needs --tracking-uri or MLFLOW_TRACKING_URI")
    print(f"sent {replay_spool(args.spool, uri, args.run_id)} values from {args.spool}")


def _add_plugins(commands: argparse._SubParsersAction) -> None:
    """The subcommands of the :data:`PLUGINS` entry points. One that fails to load still gets its command, which
    fails saying why: the other commands keep working (the pipeline's need kfp, the steps do not)."""
    found = entry_points()
    # Python 3.9 (Ascend's stack) returns a dict of groups; 3.10 on, a selectable collection.
    plugins = found.select(group=PLUGINS) if hasattr(found, "select") else found.get(PLUGINS, ())
    for plugin in plugins:
        try:
            plugin.load()(commands)
        except Exception as err:  # whatever broke it, reported when its command is used
            _add_unloaded(commands, plugin, err)


def _add_unloaded(commands: argparse._SubParsersAction, plugin: EntryPoint, err: Exception) -> None:
    """``crnn <plugin>``, whatever follows, fails with the error that kept the plugin from loading."""
    # No command-line argument can start with NUL, so every argument is taken as it is, options included.
    p = commands.add_parser(plugin.name, help=f"unavailable: {plugin.value} failed to load", add_help=False,
                            prefix_chars="\0")
    p.add_argument("arguments", nargs="*")

    def unloaded(args: argparse.Namespace) -> None:
        message = f"plugin {plugin.name} ({plugin.value}) failed to load: {type(err).__name__}: {err}"
        raise RuntimeError(message) from err

    p.set_defaults(handler=unloaded)


def _convert_one(args: argparse.Namespace) -> dict:
    from crnn.data.convert import convert_split, default_workers
    from crnn.data.shards import LabelPolicy

    if args.fmt is None:
        raise ValueError("--input needs --format")
    role = args.role or ("train" if args.fmt == "mjsynth" else "benchmark")
    policy = LabelPolicy(args.filter, args.unfiltered, for_training=role == "train")
    return convert_split(args.fmt, args.input, args.out, images=args.images, policy=policy,
                         shard_size=args.shard_size, workers=args.workers or default_workers())


def _print_texts(model: str, paths: list[Path], batch_size: int, tracking_uri: str | None) -> None:
    """Prints ``file<TAB>text`` per image, in batches; a file that is not an image is named on stderr."""
    from crnn.data.images import decode_image
    from crnn.model.export import Recognizer
    from crnn.registry.locate import local_export
    from crnn.tracking import resolve_tracking_uri

    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such image or folder")
    files = [f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])]
    recognizer = Recognizer(local_export(model, resolve_tracking_uri(tracking_uri)))
    for start in range(0, len(files), batch_size):
        images, readable = [], []
        for file in files[start:start + batch_size]:
            image = decode_image(file.read_bytes())
            if image is None:
                print(f"{file}\t<unreadable image>", file=sys.stderr)
            else:
                images.append(image)
                readable.append(file)
        for file, text in zip(readable, recognizer.read(images)):
            print(f"{file}\t{text}", flush=True)


def _add_launch_npu(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``launch-npu``; its handler (``args.handler``) returns the exit code."""
    p = subparsers.add_parser("launch-npu", help="run a command once per Ascend NPU, as one HCCL group",
                              description="Run COMMAND once per local Ascend NPU with the rank variables npu_device "
                                          "reads, e.g.: crnn launch-npu --devices 0-7 -- crnn train --device npu ...")
    p.add_argument("--devices", metavar="SPEC", help="device ids, e.g. 0-7 or 0,2,4 (default: $ASCEND_VISIBLE_DEVICES)")
    p.add_argument("--hccn-conf", type=Path, default=HCCN_CONF, metavar="PATH",
                   help=f"device IPs for the generated rank table (default: {HCCN_CONF})")
    p.add_argument("--pod-annotations", type=Path, default=POD_ANNOTATIONS, metavar="PATH",
                   help="without --hccn-conf's file: the pod's annotations (a downwardAPI volume), where the device "
                        f"plugin lists the NPUs' IPs (default: {POD_ANNOTATIONS})")
    p.add_argument("--rank-table", type=Path, metavar="PATH",
                   help="use this rank table (e.g. the hccl.json Volcano or the ascend-operator mounts) instead of "
                        "writing one; waits while its status is 'initializing'")
    p.add_argument("--rank-table-timeout", type=float, default=RANK_TABLE_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long to wait for --rank-table to be ready (default: {RANK_TABLE_TIMEOUT_S:g})")
    p.add_argument("--server-id", help="this server's server_id in the rank table (default: $XDL_IP, $POD_IP or "
                                       "the hostname's address)")
    p.add_argument("--job-id", help="JOB_ID for every rank (default: $JOB_ID or a new one)")
    p.add_argument("--log-dir", type=Path, metavar="DIR",
                   help="write each rank's output to DIR/rank-<rank>.log instead of prefixing it with [rank N]")
    p.add_argument("launch_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the command each rank runs")
    p.set_defaults(handler=_launch_npu)
    return p


def _launch_npu(args: argparse.Namespace) -> int:
    """``crnn launch-npu``: work out every local rank's environment, then launch and wait."""
    command = list(args.launch_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ValueError("no command: put it after --, e.g. crnn launch-npu --devices 0-7 -- crnn train ...")
    envs = local_rank_envs(devices=args.devices, hccn_conf=args.hccn_conf, pod_annotations=args.pod_annotations,
                           rank_table=args.rank_table,
                           rank_table_timeout=args.rank_table_timeout, server_id=args.server_id,
                           job_id=args.job_id, log_dir=args.log_dir)
    return launch(command, envs, args.log_dir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = args.handler(args)  # None: done; a command that runs others (launch-npu) returns their exit code
    except (ValueError, OSError, RuntimeError) as err:  # expected failures: one line, no traceback
        if args.verbose:
            raise
        print(f"crnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
