"""The pipeline's steps as plain functions: library work plus its MLflow child run.

The CLI (the container's contract), the KFP components and the tests all call these, so a step behaves the
same wherever it runs. Converted data is addressed by split keys, ``<dataset>/<split>`` (``mjsynth/train``,
``IC13/test_857``), which are also the folders the convert step writes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crnn.config import Recipe
from crnn.data.catalog import DatasetEntry, catalog_entry, custom_entry
from crnn.data.convert import convert_all, default_workers
from crnn.data.download import download_all, download_synthetic
from crnn.data.fetch import redact
from crnn.data.shards import DEFAULT_SHARD_SIZE, manifest_sha256
from crnn.data.splits import SYNTHETIC
from crnn.data.synthetic import SyntheticSpec
from crnn.evaluate.report import (
    REPORT_FILE,
    TABLE_FILE,
    ErrorTables,
    benchmark_entry,
    format_table,
    summarise,
    write_report,
    write_review_files,
)
from crnn.model.export import EXPORT_DIR
from crnn.registry.gate import DEFAULT_MIN_AVERAGE, Decision, GateRule
from crnn.registry.register import DEFAULT_MODEL_NAME, gate_and_alias, register_model
from crnn.run_note import (
    MANIFEST_TAG_PREFIX,
    NOTE_TAG,
    SYNTHETIC_TAG_PREFIX,
    evaluation_note,
    model_link,
    training_note,
)
from crnn.tracking import StepRun, Tracking, step_run

if TYPE_CHECKING:  # TensorFlow loads only in the steps that train
    from crnn.train.devices import Backend

log = logging.getLogger(__name__)

_REACHABLE_SECONDS = 10.0  # how long the train step waits for its queued values before logging the model


def export_dir(trained: Path) -> Path:
    """Where the train step puts the exported model."""
    return Path(trained) / EXPORT_DIR


def download(out_dir: Path, datasets: Sequence[str] = (SYNTHETIC,), spec: SyntheticSpec | None = None,
             mirror: str | None = None, source: str | None = None, fmt: str | None = None,
             sha256: str | None = None, md5: str | None = None, name: str = "custom", role: str = "benchmark",
             tracking: Tracking | None = None) -> list[dict[str, Any]]:
    """Fetches catalog datasets (through ``mirror`` if given), ``custom`` data from ``source``, or renders
    the ``synthetic`` ones; returns their ``datasets.json`` records."""
    spec = spec or SyntheticSpec()
    with step_run("download", tracking) as run:
        run.log_params({"datasets": ",".join(datasets), "mirror": redact(mirror or ""),
                        "source": redact(source or "")})
        records = []
        if SYNTHETIC in datasets:
            run.log_params({f"synthetic.{k}": v for k, v in vars(spec).items()})
            records += download_synthetic(out_dir, spec)
        entries = [_entry(dataset, source, fmt, sha256, md5, name, role) for dataset in datasets
                   if dataset != SYNTHETIC]
        if entries:
            records += download_all(entries, out_dir, mirror=mirror, source=source)
        run.set_tags({f"sha256/{r['name']}/{f['name']}": f["sha256"] for r in records for f in r["files"]})
        return records


def _entry(dataset: str, source: str | None, fmt: str | None, sha256: str | None, md5: str | None,
           name: str, role: str) -> DatasetEntry:
    if dataset != "custom":
        return catalog_entry(dataset)
    if not source or not fmt:
        raise ValueError("custom data needs --source URL and --format")
    if not (sha256 or md5):
        raise ValueError("custom data needs --sha256 HEX or --md5 HEX, so that what is fetched can be verified")
    return custom_entry(source, fmt, name=name, sha256=sha256, md5=md5, role=role)


def convert(raw_dir: Path, out_dir: Path, only: Sequence[str] | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
            workers: int = 0, tracking: Tracking | None = None) -> dict[str, dict[str, Any]]:
    """Converts the downloaded splits (those in ``only``, when given) with ``workers`` processes (0: one per
    core)."""
    workers = workers or default_workers()
    with step_run("convert", tracking) as run:
        run.log_params({"shard_size": shard_size, "workers": workers, "splits": ",".join(only) if only else "all"})
        manifests = convert_all(raw_dir, out_dir, shard_size=shard_size, only=only, workers=workers)
        _log_manifests(run, manifests, out_dir)
        return manifests


def merge_converted(raw_dir: Path, slice_dirs: Sequence[Path], out_dir: Path, keys: Sequence[str],
                    shard_size: int = DEFAULT_SHARD_SIZE,
                    tracking: Tracking | None = None) -> dict[str, dict[str, Any]]:
    """Gathers a fanned-out conversion (the slices' shards) into one folder per split, with its manifest."""
    from crnn.data.convert import merge_slices

    with step_run("convert-merge", tracking) as run:
        run.log_params({"shard_size": shard_size, "slices": len(slice_dirs), "splits": ",".join(keys)})
        manifests = merge_slices(raw_dir, slice_dirs, out_dir, keys, shard_size)
        _log_manifests(run, manifests, out_dir)
        return manifests


def _log_manifests(run: StepRun, manifests: Mapping[str, Mapping[str, Any]], out_dir: Path) -> None:
    # Counts are parameters: a metric becomes a chart in the MLflow UI, and a count has no curve to show.
    for key, manifest in manifests.items():
        run.log_params({f"samples/{key}": manifest["num_samples"], f"skipped/{key}": sum(manifest["skipped"].values()),
                        f"manifest_sha256/{key}": manifest_sha256(Path(out_dir) / key)})


def _splits(folders: Sequence[Path]) -> dict[str, tuple[Path, str]]:
    """Converted split folders by their key (``<dataset>/<split>``, the last two parts of the path)."""
    return {"/".join(Path(f).parts[-2:]): (Path(f), manifest_sha256(f)) for f in folders}


def train(recipe: Recipe, train_dirs: Sequence[Path], out_dir: Path, val_dir: Path | None = None,
          tracking: Tracking | None = None, resume: bool = True, backend: Backend | None = None):
    """Trains on ``backend`` (default: this process's CPU); only the chief worker tracks, the others train
    silently beside it."""
    from crnn.train.devices import make_backend
    from crnn.train.loop import train_model

    backend = backend or make_backend()
    # A tracking outage's leftovers are spooled beside the checkpoints, where the user looks after a run.
    tracked = (step_run("train", tracking, spool_dir=Path(out_dir) / "tracking") if backend.is_chief
               else contextlib.nullcontext(StepRun()))
    with tracked as run, run.system_metrics():
        run.log_datasets(_splits(train_dirs), "training")
        run.log_datasets(_splits([val_dir] if val_dir else []), "validation")
        result = train_model(recipe, train_dirs, out_dir, val_dir=val_dir, run=run, resume=resume, backend=backend)
        if run.enabled:
            model_id = _log_trained_model(result.export_dir, run, result.steps)
            run.set_tags({NOTE_TAG: training_note(recipe.preset, result.steps, backend.replicas, backend.device,
                                                  result.final_loss, result.val_accuracy,
                                                  model_link(run.experiment_id, model_id,
                                                             "none yet, the register step logs it"))})
        return result


def _log_trained_model(export: Path, run: StepRun, steps: int) -> str | None:
    """The export as the train run's logged model, its id; one that cannot be logged now (None) is logged by
    the register step instead, so the trained model is not lost to a tracking hiccup."""
    from crnn.registry import logged_model

    if not logged_model.can_log_models():
        log.info("the model is not logged from the train run: this MLflow client has no logged models")
        return None
    # Training never waits on the server: one that is not taking the run's values now is not asked to take
    # a model (each of MLflow's calls would retry for minutes).
    if run.outbox is not None and not run.outbox.flush(_REACHABLE_SECONDS):
        log.warning("the tracking server is not taking this run's values; the register step will log the model")
        return None
    try:
        model_id = logged_model.log_model(export, run, step=steps)
    except Exception as error:  # noqa: BLE001 - the register step logs it instead
        log.warning("the trained model was not logged (%s); the register step will log it", str(error)[:300])
        return None
    logged_model.record(export, model_id)
    return model_id


def train_on(device: str, num_devices: int, preset: str, train_dirs: Sequence[Path], out_dir: Path,
             val_dir: Path | None = None, steps: int = 0, batch_size: int = 0,
             tracking: Tracking | None = None) -> dict[str, Any]:
    """The train task's work on its node: cpu/gpu replicas in this process, or one process per NPU under
    ``crnn launch-npu`` (each rank tracks through the CLI, the chief alone logging)."""
    from crnn.config import recipe_for

    recipe = recipe_for(preset, steps=steps or None, batch_size=batch_size or None)
    if device != "npu":
        from crnn.train.devices import make_backend

        backend = make_backend(device, num_devices, precision=recipe.train.precision)
        result = train(recipe, train_dirs, out_dir, val_dir=val_dir, tracking=tracking, backend=backend)
        return {"steps": result.steps, "val_accuracy": result.val_accuracy}
    import subprocess

    from crnn.cluster.commands import TrainSpec, npu_command

    tracking_uri, parent_run_id = (tracking or Tracking()).resolved()
    spec = TrainSpec(tuple(map(str, train_dirs)), str(out_dir), val_dir=str(val_dir or ""), preset=preset,
                     steps=steps, batch_size=batch_size, device="npu", num_devices=num_devices,
                     tracking_uri=tracking_uri or "", parent_run_id=parent_run_id or "")
    subprocess.run(npu_command(spec), check=True)  # each rank's output prefixed [rank N] in the task log
    return {"steps": recipe.train.steps}  # validation: in the chief rank's MLflow run


def evaluate(model_dir: Path, benchmarks: Mapping[str, Path], out_dir: Path,
             tracking: Tracking | None = None) -> dict[str, Any]:
    """Evaluates an exported model on each named benchmark folder; writes report.json and the table."""
    from crnn.evaluate.benchmark import evaluate_dataset
    from crnn.model.export import Recognizer

    with step_run("evaluate-" + "-".join(benchmarks), tracking) as run:
        recognizer = Recognizer(model_dir)
        entries = {}
        digests = {bench: manifest_sha256(d) for bench, d in benchmarks.items()}
        run.log_datasets({bench: (Path(d), digests[bench]) for bench, d in benchmarks.items()}, "evaluation")
        model_id = _scored_model(model_dir, run)
        for bench, data_dir in benchmarks.items():
            result = evaluate_dataset(recognizer.model, data_dir, recognizer.recipe.model)
            errors = ErrorTables.of(result, recognizer.charset)
            entries[bench] = benchmark_entry(result, data_dir, errors)
            run.log_metrics({f"accuracy/{bench}": result.score.accuracy, f"ned/{bench}": result.score.ned},
                            model_id=model_id, dataset=(bench, digests[bench]))
            run.log_metrics({f"images_per_sec/{bench}": round(result.images_per_sec, 1)})
            run.log_params({f"manifest_sha256/{bench}": entries[bench]["manifest_sha256"],
                            f"num_samples/{bench}": result.score.num_samples,
                            f"synthetic/{bench}": entries[bench]["synthetic"]})
            for path in write_review_files(bench, result, errors, out_dir):
                run.log_artifact(path)
            log.info("%s: %d images at %.0f images/s", bench, result.score.num_samples, result.images_per_sec)
        report = summarise(entries)
        if run.enabled:
            model = model_link(run.experiment_id, model_id, "one not logged on this tracking server")
            run.set_tags({NOTE_TAG: evaluation_note(entries, model)})
        write_report(report, out_dir)
        for name in (REPORT_FILE, TABLE_FILE):
            run.log_artifact(Path(out_dir) / name)
        log.info("evaluation\n%s", format_table(report))
        return report


def _scored_model(model_dir: Path, run: StepRun) -> str | None:
    """The logged model the evaluation scores, named on the run (its scores are linked to it); None when the
    model was not logged on this run's server, or the server cannot say (the scores go in unlinked)."""
    from mlflow.exceptions import MlflowException

    from crnn.registry.logged_model import logged_model_id

    try:
        model_id = logged_model_id(model_dir, run.tracking_uri) if run.enabled else None
    except MlflowException as error:
        log.warning("the scores are not linked to the model: %s", str(error)[:300])
        return None
    if model_id:
        run.log_model_input(model_id)
    return model_id


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from the per-benchmark reports of a fan-out; a benchmark reported twice is an error."""
    entries: dict[str, Any] = {}
    for report in reports:
        for name, entry in report["benchmarks"].items():
            if name in entries:
                raise ValueError(f"benchmark {name!r} is reported twice")
            entries[name] = entry
    return summarise(dict(sorted(entries.items())))


def register(model_dir: Path, reports: Sequence[Mapping[str, Any]], tracking: Tracking | None = None,
             name: str = DEFAULT_MODEL_NAME, tags: Mapping[str, str] | None = None,
             rule: GateRule | None = None) -> tuple[str, Decision]:
    """Registers the model with the merged accuracies as ``candidate``, promotes it to ``champion`` if it
    passes ``rule`` (by default the pipeline's thresholds); the parent run gets the per-benchmark summary and
    the decision."""
    report = merge_reports(reports)
    with step_run("register", tracking) as run:
        version = register_model(model_dir, report, run, name=name, tags=tags)
        decision = gate_and_alias(name, version, report, rule or GateRule(DEFAULT_MIN_AVERAGE), run)
        run.set_tags({"model_name": name, "model_version": version})
        summary = StepRun(run.parent_run_id, run.tracking_uri) if run.parent_run_id else run
        # Rounded: the runs table shows every digit it gets.
        accuracies = {f"accuracy/{b}": e["accuracy"] for b, e in report["benchmarks"].items()} | {
            "accuracy/average": report["average"], "accuracy/weighted_average": report["weighted_average"]}
        summary.log_metrics({key: round(value, 4) for key, value in accuracies.items()})
        sources = {SYNTHETIC_TAG_PREFIX + b: "true" for b, e in report["benchmarks"].items() if e.get("synthetic")}
        sources |= {MANIFEST_TAG_PREFIX + b: e["manifest_sha256"] for b, e in report["benchmarks"].items()
                    if e.get("manifest_sha256")}
        summary.set_tags({"crnn.model_name": name, "crnn.model_version": version} | decision.as_tags() | sources)
        return version, decision
