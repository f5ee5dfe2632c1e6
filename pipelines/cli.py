"""``crnn pipeline run|compile|submit``: the pipeline's commands, which ``crnn`` loads as a plugin (the entry
point ``pipeline`` of the group ``crnn.commands`` in pyproject.toml), so that the library never imports the
pipeline."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from crnn.cluster.targets import DEFAULT_REGISTRY, DEFAULT_TAG, SERVICE_ACCOUNT, TARGETS
from crnn.config import PRESETS
from crnn.tracking import DEFAULT_EXPERIMENT

# kfp is imported only when a pipeline command runs, as every `crnn` command loads this plugin and kfp takes long
# to import; finding it is quick, and without it the plugin fails to load, which `crnn pipeline` reports.
if importlib.util.find_spec("kfp") is None:
    raise ModuleNotFoundError("No module named 'kfp'", name="kfp")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds ``pipeline run|compile|submit`` to the ``crnn`` subcommands ``commands``."""
    pipeline = commands.add_parser("pipeline", help="run or compile the KFP pipeline").add_subparsers(
        dest="pipeline_command", required=True)
    _add_run(pipeline)
    _add_compile(pipeline)
    _add_submit(pipeline)


def _add_run(pipeline: argparse._SubParsersAction) -> None:
    p = pipeline.add_parser("run", help="run the whole pipeline locally with kfp.local")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output root (default: outputs)")
    # No defaults for the pipeline's parameters: an option left out is not passed, so the pipeline's default holds.
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: the pipeline's")
    p.add_argument("--steps", type=int, help="0: the preset's, within its time budget (default); else trained in full")
    p.add_argument("--seed", type=int)
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--dataset", action="append", help="catalog dataset to download (repeatable; default: synthetic)")
    p.add_argument("--mirror", help="fetch catalog files from this mirror")
    p.add_argument("--train-set", action="append", help="DATASET/SPLIT to train on (repeatable)")
    p.add_argument("--val-set", help="DATASET/SPLIT to validate on")
    p.add_argument("--benchmark", action="append", help="DATASET/SPLIT to evaluate on (repeatable)")
    p.add_argument("--tracking-uri", default=None, help="default: a SQLite store under --out")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> None:
    from pipelines.local_run import run_locally

    params = {"preset": args.preset, "steps": args.steps, "seed": args.seed, "train_size": args.train_size,
              "test_size": args.test_size, "mirror": args.mirror, "datasets": args.dataset,
              "train_sets": args.train_set, "val_set": args.val_set, "benchmarks": args.benchmark}
    run_locally(args.out, tracking_uri=args.tracking_uri,
                **{key: value for key, value in params.items() if value is not None})


def _add_compile(pipeline: argparse._SubParsersAction) -> None:
    p = pipeline.add_parser("compile", help="write the compiled pipeline YAML for a cluster target")
    _compile_args(p)
    p.add_argument("--out", type=Path, help="default: pipelines/compiled/<target>.yaml")
    p.set_defaults(handler=_compile)


def _compile(args: argparse.Namespace) -> None:
    from pipelines.crnn_pipeline import compile_pipeline

    out = args.out or Path("pipelines/compiled") / f"{args.target}.yaml"
    print(f"wrote {compile_pipeline(out, args.target, args.nodes, args.registry, args.tag)}")


def _add_submit(pipeline: argparse._SubParsersAction) -> None:
    p = pipeline.add_parser("submit", help="upload the pipeline (or a new version) to KFP and start a run")
    p.add_argument("--host", required=True, help="the KFP API endpoint, e.g. http://localhost:8080")
    # The KFP experiment is named as the MLflow one the pipeline logs to.
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (created if missing)")
    _compile_args(p)
    p.add_argument("--package", type=Path, help="submit this compiled YAML instead of compiling")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline parameter (repeatable; VALUE is read as JSON when it parses, e.g. steps=5000)")
    p.add_argument("--run-name", help="default: crnn-<target>-<time>")
    p.add_argument("--version-name", help="the pipeline version's name (default: <target>-<time>)")
    p.add_argument("--namespace", help="your profile namespace on a multi-user Kubeflow: the experiment, the run "
                                       "and a newly uploaded pipeline go there")
    p.add_argument("--service-account", default=SERVICE_ACCOUNT, help="runs as this service account")
    p.add_argument("--token", help="a fixed bearer token (default: $KF_PIPELINES_TOKEN)")
    p.add_argument("--token-command", metavar="COMMAND",
                   help="a command printing a bearer token, run again before each token expires (a long --wait), "
                        "e.g. 'kubectl create token default-editor -n NS --audience pipelines.kubeflow.org'")
    p.add_argument("--token-file", metavar="PATH",
                   help="a token file read again on every request (default in a pod: the projected token at "
                        "$KF_PIPELINES_SA_TOKEN_PATH, /var/run/secrets/kubeflow/pipelines/token)")
    p.add_argument("--wait", type=int, metavar="SECONDS", help="wait up to SECONDS for the run to finish")
    p.add_argument("--no-cache", action="store_true",
                   help="run every task, reusing no cached result (the data steps still reuse complete data on the "
                        "datasets volume)")
    p.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> None:
    from pipelines.submit import submit

    submit(args)


def _compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=[t.name for t in TARGETS.values() if t.on_cluster], default="cpu",
                   help="where the train task runs")
    p.add_argument("--nodes", type=int, default=1,
                   help="train on several nodes (a TFJob; an AscendJob, one node too, for ascend)")
    p.add_argument("--registry", default=DEFAULT_REGISTRY, help="image registry prefix (as `make images`)")
    p.add_argument("--tag", default=DEFAULT_TAG, help="image tag")
