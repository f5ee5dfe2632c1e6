"""The convert step: downloaded dataset splits -> TFRecord shards and a manifest each."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

from crnn.config import ModelConfig
from crnn.data.download import read_datasets
from crnn.data.readers import find_index, reader_for
from crnn.data.tfrecord import LabelPolicy, write_shards

log = logging.getLogger(__name__)


def convert_split(fmt: str, source: Path, out_dir: Path, model: ModelConfig | None = None,
                  images: Path | None = None, policy: LabelPolicy | None = None, shard_size: int = 10_000,
                  inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One split of format ``fmt`` (its index file, or a folder holding it) -> ``out_dir``; the manifest."""
    model = model or ModelConfig()
    index = find_index(fmt, source)
    skipped: Counter = Counter()
    samples = reader_for(fmt)(index, skipped, images)
    manifest = write_shards(samples, out_dir, model, skipped, shard_size=shard_size,
                            inputs={"format": fmt, "index": str(index), **(inputs or {})},
                            policy=policy or LabelPolicy())
    log.info("%s: %d samples in %d shard(s), skipped %s", out_dir, manifest["num_samples"],
             len(manifest["shards"]), manifest["skipped"] or "none")
    return manifest


def convert_all(raw_dir: Path, out_dir: Path, model: ModelConfig | None = None, shard_size: int = 10_000,
                only: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every split listed in ``raw_dir/datasets.json`` (or those named ``<dataset>/<split>`` in ``only``)
    -> ``out_dir/<dataset>/<split>/``; returns the manifests keyed ``<dataset>/<split>``."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    datasets = read_datasets(raw_dir)
    available = {f"{d['name']}/{split}" for d in datasets for split in d["splits"]}
    missing = set(only or ()) - available
    if missing:
        raise ValueError(f"{raw_dir}: no split {', '.join(sorted(missing))} was downloaded; "
                         f"available: {', '.join(sorted(available))}")
    manifests = {}
    for dataset in datasets:
        for split, spec in dataset["splits"].items():
            key = f"{dataset['name']}/{split}"
            if only is not None and key not in only:
                continue
            images = raw_dir / spec["images"] if spec.get("images") else None
            inputs = {"dataset": dataset["name"], "split": split, "role": dataset["role"],
                      "files": {f["name"]: {"url": f["url"], "sha256": f["sha256"]} for f in dataset["files"]}}
            manifests[key] = convert_split(
                dataset["format"], raw_dir / spec["index"], out_dir / key, model, images=images,
                policy=LabelPolicy(spec.get("filter"), spec.get("unfiltered", False), dataset["role"] == "train"),
                shard_size=shard_size,
                inputs=inputs)
    return manifests
