"""The pipeline's data steps as its components run them: the data on the data root (``crnn.data.store``), a
reference in each KFP artifact; and the run's own folder there, for training's checkpoints and the evaluation
reports.

Each location is keyed by what its bytes depend on: the downloaded datasets by their catalog entries (the
files' digests, not the mirror they came through) or the synthetic spec; a conversion by the download it
read, its splits and its shard size. A step's MLflow record (``STEP_RECORD``) is written into its location, so
a reused location still has its step's values for ``log_data_steps`` to log, tagged cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crnn import steps
from crnn.data import store
from crnn.data.catalog import DatasetEntry, catalog_entry
from crnn.data.download import read_datasets
from crnn.data.shards import SCHEMA_VERSION, read_manifest
from crnn.data.splits import SYNTHETIC, benchmark_name
from crnn.data.synthetic import SyntheticSpec
from crnn.evaluate.report import read_report
from crnn.files import write_json
from crnn.job_id import pipeline_job_id
from crnn.model.export import EXPORT_DIR
from crnn.tracking import STEP_RECORD, Tracking

log = logging.getLogger(__name__)

# Bumped when the layout the steps write changes, so that no run reuses a location of the old layout.
LAYOUT_VERSION = 2  # 2: datasets.json and manifests say whether the data is synthetic
SLICES = ".slices"


def _recorded_in(location: Path) -> Tracking:
    return Tracking(record_to=location / STEP_RECORD)


def download(data_root: str, ref_dir: str, datasets: Sequence[str], spec: SyntheticSpec,
             mirror: str | None = None) -> list[str]:
    """Downloads ``datasets`` into their location under ``data_root`` (or finds them there) and writes the
    reference into ``ref_dir``; returns the names of the datasets there (``synthetic`` stands for several)."""
    inputs: dict[str, Any] = {"layout": LAYOUT_VERSION, "datasets": list(datasets),
                              "catalog": [_identity(catalog_entry(d)) for d in datasets if d != SYNTHETIC]}
    if SYNTHETIC in datasets:
        inputs["synthetic"] = dataclasses.asdict(spec)
    location = store.data_location(data_root, "raw", inputs)
    store.produce(location, inputs, lambda out: steps.download(out, datasets, spec, mirror=mirror,
                                                               tracking=_recorded_in(out)))
    store.write_ref(ref_dir, location)
    return [record["name"] for record in read_datasets(location)]


def _identity(entry: DatasetEntry) -> dict[str, Any]:
    """What a catalog entry's downloaded bytes depend on: its files' digests and its splits (not its URLs: a
    mirror serves the same verified bytes, nor its description)."""
    return {"name": entry.name, "format": entry.format, "role": entry.role,
            "files": sorted([f.name, f.sha256 or f.md5, f.into] for f in entry.files),
            "splits": {name: dataclasses.asdict(split) for name, split in sorted(entry.splits.items())}}


def _converted_location(data_root: str, raw: Path, keys: Sequence[str], shard_size: int) -> tuple[Path, dict]:
    inputs = {"layout": LAYOUT_VERSION, "schema": SCHEMA_VERSION, "raw": raw.name, "splits": sorted(keys),
              "shard_size": shard_size}
    return store.data_location(data_root, "converted", inputs), inputs


def convert(raw_ref: str, data_root: str, ref_dir: str, keys: Sequence[str], shard_size: int) -> dict[str, int]:
    """Converts the splits ``keys`` of the download ``raw_ref`` refers to (or finds them converted); returns
    each split's number of samples."""
    raw = store.resolve(raw_ref)
    location, inputs = _converted_location(data_root, raw, keys, shard_size)
    store.produce(location, inputs, lambda out: steps.convert(raw, out, sorted(keys), shard_size,
                                                              tracking=_recorded_in(out)))
    store.write_ref(ref_dir, location)
    return _sample_counts(location, keys)


def plan_slices(raw_ref: str, data_root: str, train_sets: Sequence[str], shard_size: int,
                slices: int) -> list[dict[str, Any]]:
    """The training sets' shards cut into ``slices`` ranges, each with the folder its task writes into."""
    from crnn.data.convert import plan_slices as plan

    raw = store.resolve(raw_ref)
    location, _ = _converted_location(data_root, raw, train_sets, shard_size)
    return [{**part, "into": str(location / SLICES / str(number))}
            for number, part in enumerate(plan(raw, train_sets, shard_size, slices))]


def convert_slice(raw_ref: str, part: dict[str, Any], shard_size: int) -> None:
    """Writes one slice's shards into its folder (nothing when the training sets are converted already: a
    reused location)."""
    from crnn.data.convert import convert_slice as convert_one
    from crnn.data.convert import default_workers

    into = Path(part["into"])
    converted = into.parent.parent
    with store.locked(into):
        if not store.is_complete(converted):  # checked under the lock: a merge may just have finished
            convert_one(store.resolve(raw_ref), into, part["ranges"], shard_size, workers=default_workers())


def merge_slices(raw_ref: str, plan: Sequence[dict[str, Any]], data_root: str, ref_dir: str,
                 train_sets: Sequence[str], shard_size: int) -> dict[str, int]:
    """Moves the slices' shards into the training sets' location and writes their manifests."""
    raw = store.resolve(raw_ref)
    location, inputs = _converted_location(data_root, raw, train_sets, shard_size)
    slice_dirs = [Path(part["into"]) for part in plan]

    def merge(out: Path) -> None:
        with contextlib.ExitStack() as held:  # no slice task of a concurrent run writes while they move
            for folder in slice_dirs:
                held.enter_context(store.locked(folder))
            steps.merge_converted(raw, slice_dirs, out, train_sets, shard_size, tracking=_recorded_in(out))
            shutil.rmtree(out / SLICES)

    store.produce(location, inputs, merge)
    store.write_ref(ref_dir, location)
    return _sample_counts(location, train_sets)


def _sample_counts(location: Path, keys: Sequence[str]) -> dict[str, int]:
    return {key: read_manifest(location / key)["num_samples"] for key in keys}


def training_folders(train_ref: str, data_ref: str, train_sets: Sequence[str],
                     val_set: str) -> tuple[list[Path], Path | None]:
    """The converted training splits and the validation split (None without one) the references name."""
    train_data = store.resolve(train_ref)
    return [train_data / key for key in train_sets], store.resolve(data_ref) / val_set if val_set else None


def step_records(ref_dirs: Sequence[str]) -> list[Path]:
    """The locations whose ``STEP_RECORD`` ``log_data_steps`` logs."""
    return [store.resolve(ref) for ref in ref_dirs]


def run_folder(data_root: str, job_id: str) -> Path:
    """This pipeline run's own folder under ``data_root``: training's checkpoints, the evaluation reports."""
    return store.data_root(data_root) / "runs" / pipeline_job_id(job_id)


def remove_run_folder(data_root: str, job_id: str) -> None:
    """Removes the run's folder once the run has ended: its model is in the artifact store and MLflow, its
    reports too. A multi-node job writes there as well, so the folder goes only after the job's end."""
    folder = run_folder(data_root, job_id)
    if folder.is_dir():
        shutil.rmtree(folder)
        log.info("removed %s", folder)


def publish_model(work_dir: Path, model_dir: str) -> None:
    """Copies the exported model out of the training folder into the model artifact: the checkpoints stay on
    the volume (a retried train task resumes from them), only the export crosses the artifact store."""
    export = Path(work_dir) / EXPORT_DIR
    shutil.copytree(export, Path(model_dir) / EXPORT_DIR, dirs_exist_ok=True)


def _reports_dir(data_root: str, job_id: str) -> Path:
    return run_folder(data_root, job_id) / "reports"


def keep_report(data_root: str, job_id: str, report_dir: str) -> Path:
    """Copies a benchmark's ``report.json`` to this run's folder under ``data_root``, where ``gather_reports``
    finds it: the evaluate tasks' reports are gathered there rather than as outputs of their ParallelFor
    (``dsl.Collected`` needs a KFP backend of 2.14 or later)."""
    report = read_report(Path(report_dir))
    [name] = report["benchmarks"]
    dest = _reports_dir(data_root, job_id) / f"{name}.json"
    write_json(dest, report)
    return dest


def gather_reports(data_root: str, job_id: str, benchmarks: Sequence[str]) -> list[dict[str, Any]]:
    """The reports ``keep_report`` kept for this run, one per benchmark split (``<dataset>/<split>``)."""
    folder = _reports_dir(data_root, job_id)
    paths = [folder / f"{benchmark_name(b)}.json" for b in benchmarks]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no evaluation report at {', '.join(missing)}: did every evaluate task of this "
                                "run succeed?")
    return [json.loads(path.read_text()) for path in paths]
