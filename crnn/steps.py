"""The pipeline's steps as plain functions: library work plus its MLflow child run.

The CLI (the container's contract), the KFP components and the tests all call these, so a step behaves the
same wherever it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crnn.config import Recipe
from crnn.data.convert import convert_all
from crnn.data.download import download_synthetic
from crnn.data.synthetic import SyntheticSpec
from crnn.data.tfrecord import manifest_sha256
from crnn.evaluate.report import benchmark_entry, format_table, summarise, write_report
from crnn.model.export import EXPORT_DIR
from crnn.registry.register import DEFAULT_MODEL_NAME, register_model
from crnn.tracking import StepRun, Tracking, step_run

log = logging.getLogger(__name__)

TRAIN_SPLIT = "mjsynth/train"
VAL_SPLIT = "mjsynth/val"


def benchmark_dir(converted: Path, name: str) -> Path:
    """Where the convert step puts a benchmark's test split."""
    return Path(converted) / name / "test"


def export_dir(trained: Path) -> Path:
    """Where the train step puts the exported model."""
    return Path(trained) / EXPORT_DIR


def download(out_dir: Path, spec: SyntheticSpec, tracking: Tracking | None = None) -> list[dict]:
    with step_run("download", tracking) as run:
        run.log_params({"source": "synthetic", "seed": spec.seed, "train_size": spec.train_size,
                        "val_size": spec.val_size, "test_size": spec.test_size})
        datasets = download_synthetic(out_dir, spec)
        run.set_tags({f"sha256/{d['name']}": d["sha256"] for d in datasets})
        return datasets


def convert(raw_dir: Path, out_dir: Path, shard_size: int = 10_000,
            tracking: Tracking | None = None) -> dict[str, dict[str, Any]]:
    with step_run("convert", tracking) as run:
        run.log_params({"shard_size": shard_size})
        manifests = convert_all(raw_dir, out_dir, shard_size=shard_size)
        for key, manifest in manifests.items():
            run.log_metrics({f"samples/{key}": manifest["num_samples"],
                             f"skipped/{key}": sum(manifest["skipped"].values())})
            run.log_params({f"manifest_sha256/{key}": manifest_sha256(Path(out_dir) / key)})
        return manifests


def train(recipe: Recipe, train_dir: Path, out_dir: Path, val_dir: Path | None = None,
          tracking: Tracking | None = None, resume: bool = True):
    from crnn.train.loop import train as train_loop

    with step_run("train", tracking) as run:
        result = train_loop(recipe, train_dir, out_dir, val_dir=val_dir, run=run, resume=resume)
        run.log_metrics({"final_loss": result.final_loss})
        return result


def train_on_converted(recipe: Recipe, converted: Path, out_dir: Path, tracking: Tracking | None = None):
    """Trains on the convert step's training split, validating on its validation split."""
    converted = Path(converted)
    return train(recipe, converted / TRAIN_SPLIT, out_dir, val_dir=converted / VAL_SPLIT, tracking=tracking)


def evaluate(model_dir: Path, benchmarks: Mapping[str, Path], out_dir: Path,
             tracking: Tracking | None = None) -> dict[str, Any]:
    """Evaluates an exported model on each named benchmark folder; writes report.json and the table."""
    from crnn.evaluate.benchmark import evaluate_dataset
    from crnn.model.export import Recognizer

    name = "evaluate-" + "-".join(benchmarks)
    with step_run(name, tracking) as run:
        recognizer = Recognizer(model_dir)
        entries = {}
        for bench, data_dir in benchmarks.items():
            result = evaluate_dataset(recognizer.model, data_dir, recognizer.recipe.model)
            entries[bench] = benchmark_entry(result, data_dir)
            run.log_metrics({f"accuracy/{bench}": result.score.accuracy, f"ned/{bench}": result.score.ned,
                             f"images_per_sec/{bench}": result.images_per_sec})
            run.log_params({f"manifest_sha256/{bench}": manifest_sha256(data_dir)})
        report = summarise(entries)
        path = write_report(report, out_dir)
        run.log_artifact(path)
        log.info("evaluation\n%s", format_table(report))
        return report


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from the per-benchmark reports of a fan-out."""
    entries: dict[str, Any] = {}
    for report in reports:
        entries.update(report["benchmarks"])
    return summarise(dict(sorted(entries.items())))


def register(model_dir: Path, reports: Sequence[Mapping[str, Any]], tracking: Tracking | None = None,
             name: str = DEFAULT_MODEL_NAME,
             tags: Mapping[str, str] | None = None) -> str:
    """Registers the model with the merged accuracies; the parent run gets the per-benchmark summary."""
    report = merge_reports(reports)
    with step_run("register", tracking) as run:
        version = register_model(model_dir, report, run, name=name, tags=tags)
        run.set_tags({"model_name": name, "model_version": version})
        summary = StepRun(run.parent_run_id, run.tracking_uri) if run.parent_run_id else run
        summary.log_metrics({f"accuracy/{b}": e["accuracy"] for b, e in report["benchmarks"].items()}
                            | {"accuracy/average": report["average"],
                               "accuracy/weighted_average": report["weighted_average"]})
        summary.set_tags({"crnn.model_name": name, "crnn.model_version": version})
        return version
