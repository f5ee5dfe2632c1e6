"""The convert step: dataset splits -> TFRecord shards and a manifest, in parallel, resumable, deterministic.

A split's index is cut into shards of ``shard_size`` consecutive items (lines of a text index, LMDB samples,
entries of an XML or ``.mat`` index: ``readers.Part``), so shard ``k`` holds the samples of the same items
whoever writes it: worker processes (``workers``), or KFP tasks that each take a contiguous range of shards
(``convert_slice``, then ``merge_slices``). Each shard's process lists its own items: the converting process
only finds where the shards' lines start. The shards and the manifest are byte-identical whatever the number
of workers or slices.

Shards are written into ``.parts/``, each with its figures (``shard-NNNNN.json``); a conversion started again
over the same plan keeps the shards whose figures and bytes agree and writes only the rest. Only when every
shard is there are they moved into place and the manifest written, so a conversion that fails (a full disk)
or is killed leaves an earlier complete conversion in the folder as it was; the price is room for both while
converting again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from crnn.config import ModelConfig
from crnn.data.readers import Source, find_index, open_source
from crnn.data.shards import (
    DEFAULT_SHARD_SIZE,
    MANIFEST,
    SCHEMA_VERSION,
    LabelPolicy,
    naming_full_storage,
    shard_name,
    write_shard,
)
from crnn.files import sha256_of, start_writeback, sync_file, write_json

log = logging.getLogger(__name__)

PARTS = ".parts"
PLAN = "plan.json"


def default_workers() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a pod's CPU limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def shard_ranges(items: int, shard_size: int) -> list[range]:
    """The index items of each shard; at least one (possibly empty) shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return [range(start, min(start + shard_size, items)) for start in range(0, max(items, 1), shard_size)]


def _plan(source: Source, model: ModelConfig, policy: LabelPolicy, shard_size: int,
          inputs: dict[str, Any]) -> dict[str, Any]:
    """What the shards' bytes depend on, and a resume or a merge must find unchanged: the index (its digest is
    in ``inputs``, but for an LMDB, whose files' digests come from its download), its items, and the settings
    (not where the data is mounted, which differs between pipeline tasks)."""
    return {"format": source.fmt, "items": source.items, "inputs": inputs, "shard_size": shard_size,
            "model": asdict(model), "policy": asdict(policy)}


def _prepare(out_dir: Path, plan: dict[str, Any]) -> Path:
    """The parts folder of ``plan``; what an unfinished conversion of another plan left there is cleared. A
    finished conversion in ``out_dir`` (shards and manifest) stays until ``finish`` replaces it."""
    parts = out_dir / PARTS
    plan_file = parts / PLAN
    if plan_file.is_file() and json.loads(plan_file.read_text()) != json.loads(json.dumps(plan)):
        log.info("%s: an unfinished conversion used other input or settings; starting over", out_dir)
        shutil.rmtree(parts)
    # Half-written files of a killed run (atomic_path's temporary names) are never resumed from.
    for leftover in parts.glob(".*.tmp-*"):
        leftover.unlink()
    parts.mkdir(parents=True, exist_ok=True)
    _write_json(plan_file, plan)
    return parts


def _write_json(dest: Path, data: Any) -> None:
    with naming_full_storage(dest):
        write_json(dest, data)


def _done(out_dir: Path, number: int) -> dict[str, Any] | None:
    """The figures of a shard already written whole into the parts folder, else None."""
    part, shard = out_dir / PARTS / f"{shard_name(number)}.json", out_dir / PARTS / shard_name(number)
    if not (part.is_file() and shard.is_file()):
        return None
    figures = json.loads(part.read_text())
    return figures if sha256_of(shard) == figures["sha256"] else None


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism; OpenCV's own threads would only contend


class Workers:
    """Up to ``count`` processes that write shards (``convert_shards``), made when a conversion has more than
    one shard to write and kept for the next (``worker_pool`` closes them)."""

    def __init__(self, count: int, context: multiprocessing.context.BaseContext):
        self._count, self._context = count, context
        self._pool: ProcessPoolExecutor | None = None

    def map(self, function: Callable, jobs: list) -> Iterator:
        if len(jobs) <= 1:
            return map(function, jobs)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._count, mp_context=self._context, initializer=_worker_init)
        return self._pool.map(function, jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[Workers | None]:
    """``Workers`` for ``convert_shards``; None for one worker (shards are then written in this process).

    The processes are forked from a fork server: a fresh single-threaded process that imports the converter
    once, for this process's lifetime. It is started here, so that it imports while the caller opens its
    index; the processes themselves only when there are shards for them. Forked from this process instead,
    they would inherit OpenCV's and TensorFlow's thread pools mid-flight and can hang (seen here after OpenCV
    had resized images in the parent); spawned, each would import everything again, at a CPU cost that grows
    with what the main module imports."""
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    multiprocessing.forkserver.ensure_running()
    pool = Workers(workers, context)
    try:
        yield pool
    finally:
        pool.close()


def _write_one(job: tuple) -> tuple[int, dict[str, Any]]:
    out_dir, number, part, model, policy = job
    figures = write_shard(out_dir / PARTS / shard_name(number), part, model, policy)
    start_writeback(out_dir / PARTS / shard_name(number))  # the disk works on it while the next is converted
    _write_json(out_dir / PARTS / f"{shard_name(number)}.json", figures)
    return number, figures


def convert_shards(source: Source, out_dir: Path, model: ModelConfig, policy: LabelPolicy, shard_size: int,
                   inputs: dict[str, Any], shards: range | None = None,
                   pool: Workers | None = None) -> dict[int, dict[str, Any]]:
    """Writes the shards numbered ``shards`` (default: all) that are not already done, in ``pool``'s
    processes (``worker_pool``) or in this one; returns the figures of every shard in ``shards``."""
    out_dir = Path(out_dir)
    ranges = shard_ranges(source.items, shard_size)
    shards = range(len(ranges)) if shards is None else shards
    _prepare(out_dir, _plan(source, model, policy, shard_size, inputs))
    figures = {n: f for n in shards if (f := _done(out_dir, n)) is not None}
    jobs = [(out_dir, n, source.part(ranges[n]), model, policy) for n in shards if n not in figures]
    if figures:
        log.info("%s: %d shard(s) already written, %d to go", out_dir, len(figures), len(jobs))
    figures.update((pool.map if pool is not None else map)(_write_one, jobs))
    return figures


def finish(out_dir: Path, source: Source, model: ModelConfig, policy: LabelPolicy, shard_size: int,
           inputs: dict[str, Any] | None = None, written: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Moves every shard (all must be done) into place, writes ``manifest.json`` from their figures and removes
    ``.parts``. ``written``: figures of shards this process has just written or checked, not read again."""
    out_dir = Path(out_dir)
    count = len(shard_ranges(source.items, shard_size))
    written = written or {}
    shards = []
    for number in range(count):
        figures = written.get(number) or _done(out_dir, number)
        if figures is None:
            raise ValueError(f"{out_dir}: {shard_name(number)} is missing or incomplete; convert it first")
        shards.append(figures)
    skipped = Counter(source.skipped)
    for figures in shards:
        skipped.update(figures["skipped"])
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image": {"height": model.height, "width": model.width, "channels": model.channels,
                  "encoding": "raw_uint8"},
        "charset": model.charset,
        "max_label_length": model.max_label_length,
        "num_samples": sum(f["count"] for f in shards),
        "num_listed": sum(f["listed"] for f in shards) + source.skipped.total(),
        "shards": [{"file": f["file"], "count": f["count"], "sha256": f["sha256"]} for f in shards],
        "shard_size": shard_size,
        "skipped": dict(sorted(skipped.items())),
        "labels_normalised": sum(f["labels_normalised"] for f in shards),
        "label_policy": asdict(policy),
        "inputs": inputs or {},
    }
    _publish(out_dir, manifest)
    shutil.rmtree(out_dir / PARTS)
    log.info("%s: %d samples in %d shard(s), skipped %s", out_dir, manifest["num_samples"], len(shards),
             manifest["skipped"] or "none")
    return manifest


def _publish(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Replaces the conversion in ``out_dir`` by the one in ``.parts``. The new shards are synced to disk and the
    new manifest written there first, so a full disk fails before anything is touched; then only renames and
    removals: the old manifest goes (no manifest ever lists shards it did not describe), the shards move over
    the old ones, the manifest last."""
    parts = out_dir / PARTS
    listed = sorted(f["file"] for f in manifest["shards"])
    _sync_shards([parts / name for name in listed])
    _write_json(parts / MANIFEST, manifest)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for name in listed:
        os.replace(parts / name, out_dir / name)
    for stale in out_dir.glob("shard-*.tfrecord"):
        if stale.name not in listed:
            stale.unlink()
    os.replace(parts / MANIFEST, out_dir / MANIFEST)


def _sync_shards(shards: list[Path]) -> None:
    """Flushes the shards to disk (``write_shard`` leaves that to here), several at once: each waits on the
    disk, not on the CPU. A full disk is named by the shard it stopped."""

    def sync(shard: Path) -> None:
        with naming_full_storage(shard):
            sync_file(shard)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(sync, shards))


def _inputs(source: Source, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What the manifest says of its input: the index by name (not by where it is mounted) and its digest.
    An LMDB's data.mdb can be many gigabytes; its digest comes from the download's files instead."""
    digest = {} if source.sha256 is None else {"index_sha256": source.sha256}
    return {"format": source.fmt, "index": source.index.name, **digest, **(extra or {})}


def convert_split(fmt: str, source: Path, out_dir: Path, model: ModelConfig | None = None,
                  images: Path | None = None, policy: LabelPolicy | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                  workers: int = 1, inputs: dict[str, Any] | None = None,
                  pool: Workers | None = None) -> dict[str, Any]:
    """One split of format ``fmt`` (its index file, or a folder holding it) -> ``out_dir``; the manifest.
    ``workers`` processes convert it, or those of ``pool`` (``worker_pool``) when given."""
    model, policy = model or ModelConfig(), policy or LabelPolicy()
    with contextlib.nullcontext(pool) if pool is not None else worker_pool(workers) as pool:
        opened = open_source(fmt, find_index(fmt, source), images)
        inputs = _inputs(opened, inputs)
        written = convert_shards(opened, out_dir, model, policy, shard_size, inputs, pool=pool)
    return finish(out_dir, opened, model, policy, shard_size, inputs, written)


def split_jobs(raw_dir: Path, only: Collection[str] | None = None) -> list[dict[str, Any]]:
    """What converting ``raw_dir`` means, per split: key, format, index, images, policy and inputs."""
    from crnn.data.download import read_datasets

    raw_dir = Path(raw_dir)
    datasets = read_datasets(raw_dir)
    available = {f"{d['name']}/{split}" for d in datasets for split in d["splits"]}
    missing = set(only or ()) - available
    if missing:
        raise ValueError(f"{raw_dir}: no split {', '.join(sorted(missing))} was downloaded; "
                         f"available: {', '.join(sorted(available))}")
    jobs = []
    for dataset in datasets:
        for split, spec in dataset["splits"].items():
            key = f"{dataset['name']}/{split}"
            if only is not None and key not in only:
                continue
            jobs.append({
                "key": key, "format": dataset["format"], "index": raw_dir / spec["index"],
                "images": raw_dir / spec["images"] if spec.get("images") else None,
                "policy": LabelPolicy(spec.get("filter"), spec.get("unfiltered", False), dataset["role"] == "train"),
                "expected_samples": spec.get("samples"),
                "inputs": {"dataset": dataset["name"], "split": split, "role": dataset["role"],
                           "synthetic": dataset.get("synthetic", False),
                           "files": {f["name"]: {"url": f["url"], "sha256": f["sha256"]} for f in dataset["files"]}},
            })
    return jobs


def convert_all(raw_dir: Path, out_dir: Path, model: ModelConfig | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                only: Collection[str] | None = None, workers: int = 1) -> dict[str, dict[str, Any]]:
    """Every split listed in ``raw_dir/datasets.json`` (or those named ``<dataset>/<split>`` in ``only``)
    -> ``out_dir/<dataset>/<split>/``; returns the manifests keyed ``<dataset>/<split>``."""
    manifests = {}
    with worker_pool(workers) as pool:  # one set of processes for every split
        for job in split_jobs(raw_dir, only):
            manifest = convert_split(job["format"], job["index"], Path(out_dir) / job["key"], model,
                                     images=job["images"], policy=job["policy"], shard_size=shard_size,
                                     inputs=job["inputs"], pool=pool)
            expected = job["expected_samples"]
            if expected is not None and manifest["num_samples"] != expected:
                log.warning("%s: %d samples, the catalog says %d (skipped: %s)", job["key"],
                            manifest["num_samples"], expected, manifest["skipped"] or "none")
            manifests[job["key"]] = manifest
    return manifests


def _job(raw_dir: Path, key: str) -> tuple[dict[str, Any], Source, dict[str, Any]]:
    """(the split's job, its listed source, the manifest's inputs) for a split of a download folder."""
    job = split_jobs(raw_dir, [key])[0]
    source = open_source(job["format"], find_index(job["format"], job["index"]), job["images"])
    return job, source, _inputs(source, job["inputs"])


def plan_slices(raw_dir: Path, keys: Sequence[str], shard_size: int, slices: int) -> list[dict[str, Any]]:
    """Cuts the shards of the splits ``keys`` into ``slices`` contiguous ranges of about equal size, for
    separate tasks (``convert_slice``); each range is ``{"key", "first", "last"}`` items, last exclusive."""
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    shards = []
    for key in keys:
        _, source, _ = _job(raw_dir, key)
        shards += [(key, number) for number in range(len(shard_ranges(source.items, shard_size)))]
    bounds = [round(i * len(shards) / slices) for i in range(slices + 1)]
    plan = []
    for start, stop in zip(bounds, bounds[1:]):
        ranges: dict[str, list[int]] = {}
        for key, number in shards[start:stop]:
            ranges.setdefault(key, []).append(number)
        plan.append([{"key": key, "first": numbers[0], "last": numbers[-1] + 1} for key, numbers in ranges.items()])
    return [{"ranges": ranges} for ranges in plan if ranges]


def convert_slice(raw_dir: Path, out_dir: Path, ranges: Sequence[dict[str, Any]], shard_size: int,
                  model: ModelConfig | None = None, workers: int = 1) -> None:
    """Writes the shards of one slice into ``out_dir/<key>/`` with their figures; ``merge_slices`` finishes.
    (Numbers are cast: a pipeline hands them over as JSON, where 3 may arrive as 3.0.)"""
    model = model or ModelConfig()
    with worker_pool(workers) as pool:
        for part in ranges:
            job, source, inputs = _job(raw_dir, part["key"])
            convert_shards(source, Path(out_dir) / part["key"], model, job["policy"], shard_size, inputs,
                           shards=range(int(part["first"]), int(part["last"])), pool=pool)


def merge_slices(raw_dir: Path, slice_dirs: Sequence[Path], out_dir: Path, keys: Sequence[str], shard_size: int,
                 model: ModelConfig | None = None) -> dict[str, dict[str, Any]]:
    """Moves the slices' shards into ``out_dir/<key>/`` (the same file system) and writes each split's
    manifest: the same bytes as ``convert_all`` writing them on one machine."""
    model = model or ModelConfig()
    manifests = {}
    for key in keys:
        job, source, inputs = _job(raw_dir, key)
        target = Path(out_dir) / key
        plan = _prepare(target, _plan(source, model, job["policy"], shard_size, inputs)) / PLAN
        for folder in slice_dirs:
            part = Path(folder) / key
            if not part.is_dir():
                continue  # this slice held none of this split's shards
            if json.loads((part / PARTS / PLAN).read_text()) != json.loads(plan.read_text()):
                raise ValueError(f"{part}: converted with other input or settings than {key} now has")
            # Moved, not copied: the slices are on the same volume, and a merge run again finds them in place.
            for figures in sorted((part / PARTS).glob("shard-*.json")):
                shard = figures.name.removesuffix(".json")
                os.replace(part / PARTS / shard, target / PARTS / shard)
                os.replace(figures, target / PARTS / figures.name)
        manifests[key] = finish(target, source, model, job["policy"], shard_size, inputs)
    return manifests
