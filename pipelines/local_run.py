"""``make run``: the whole pipeline through kfp.local's SubprocessRunner on an embedded MLflow store."""

from __future__ import annotations

import builtins
import logging
import os
import time
from pathlib import Path

from crnn.data.splits import HELDOUT_BENCHMARK
from crnn.run_note import SYNTHETIC_TAG_PREFIX
from crnn.run_views import pipeline_runs_link
from crnn.tracking import DEFAULT_EXPERIMENT, sqlite_uri

UI_URL = "http://127.0.0.1:5000"  # where `make ui` serves the MLflow UI

log = logging.getLogger(__name__)


def run_locally(out: Path, tracking_uri: str | None = None, runner: object | None = None,
                data_root: Path | None = None, **params) -> dict:
    """Runs the pipeline with everything under ``out``; prints and returns the summary.

    ``runner``: kfp.local's runner (default: each task a subprocess of this Python, whose virtualenv has the
    library). ``data_root``: where the datasets go (default ``out/datasets``; a later run with the same data
    finds them there). ``params`` are pipeline parameters (``preset``, ``steps``, ``train_size``...); the rest
    keep their defaults.
    """
    from kfp import local

    from pipelines.crnn_pipeline import crnn_pipeline

    out = Path(out).resolve()
    store = out / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or sqlite_uri(store / "mlflow.db")
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "pipeline_root"))
    run_name = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    started = time.monotonic()
    real_print = builtins.print
    try:
        crnn_pipeline(tracking_uri=tracking_uri, run_name=run_name,
                      data_root=str(Path(data_root or out / "datasets").resolve()), **params)
    finally:
        # kfp.local indents task output by swapping print(); tasks in parallel threads can leave it swapped.
        builtins.print = real_print
    summary = pipeline_summary(tracking_uri, run_name)
    summary["pipeline_seconds"] = time.monotonic() - started
    print(format_summary(summary, store))
    return summary


def pipeline_summary(tracking_uri: str, run_name: str, experiment: str = DEFAULT_EXPERIMENT) -> dict:
    """The parent run's per-benchmark accuracy and the registered version, read back from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"attributes.run_name = '{run_name}'") if found else []
    if not runs:
        raise RuntimeError(f"no MLflow run named {run_name!r} in experiment {experiment!r}")
    parent = runs[0]
    accuracy = {k.split("/", 1)[1]: v for k, v in parent.data.metrics.items() if k.startswith("accuracy/")}
    return {
        "run_id": parent.info.run_id,
        "experiment_id": parent.info.experiment_id,
        "status": parent.info.status,
        "accuracy": accuracy,
        "model_name": parent.data.tags.get("crnn.model_name"),
        "model_version": parent.data.tags.get("crnn.model_version"),
        "gate": {k.removeprefix("gate."): v for k, v in parent.data.tags.items() if k.startswith("gate.")},
        "synthetic": sorted(k.removeprefix(SYNTHETIC_TAG_PREFIX) for k, v in parent.data.tags.items()
                            if k.startswith(SYNTHETIC_TAG_PREFIX) and v == "true"),
        "tracking_uri": tracking_uri,
    }


def format_summary(summary: dict, store: Path) -> str:
    accuracy = dict(summary["accuracy"])
    average = accuracy.pop("average", float("nan"))
    accuracy.pop("weighted_average", None)
    synthetic = set(summary.get("synthetic", ()))
    names = {name: name + (" (synthetic)" if name in synthetic else "") for name in accuracy}
    width = max([18, *map(len, names.values())])
    rule = "-" * (width + 11)
    lines = ["", f"{'benchmark':<{width}} {'accuracy %':>10}", rule]
    lines += [f"{names[name]:<{width}} {100 * value:>10.2f}" for name, value in sorted(accuracy.items())]
    lines += [rule, f"{'average':<{width}} {100 * average:>10.2f}", ""]
    if synthetic:
        lines.append("(synthetic: rendered stand-ins named after the real benchmarks, not their data)")
        if HELDOUT_BENCHMARK in synthetic:
            lines.append(f"({HELDOUT_BENCHMARK}: drawn from fonts, surfaces and words that training never used)")
        lines.append("")
    lines.append(f"registered model: {summary['model_name']} version {summary['model_version']}, "
                 f"gate: {summary['gate'].get('decision', 'not decided')}")
    lines += [f"  {name}: {verdict}" for name, verdict in summary["gate"].items()
              if verdict.startswith("fail")]
    lines.append(f"MLflow run: {summary['run_id']} ({summary['status']}), "
                 f"pipeline time {summary['pipeline_seconds']:.0f} s")
    lines.append(f"open the UI: make ui   (mlflow ui --backend-store-uri {summary['tracking_uri']}), then "
                 f"{UI_URL}/{pipeline_runs_link(summary['experiment_id'])}")
    return "\n".join(lines)
