"""The convert step: every split of every downloaded dataset -> TFRecord shards and a manifest."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from crnn.config import ModelConfig
from crnn.data.download import read_datasets
from crnn.data.readers import reader_for
from crnn.data.tfrecord import write_shards

log = logging.getLogger(__name__)


def convert_all(raw_dir: Path, out_dir: Path, model: ModelConfig | None = None,
                shard_size: int = 10_000) -> dict[str, dict[str, Any]]:
    """Writes ``out_dir/<dataset>/<split>/``; returns the manifests keyed ``<dataset>/<split>``."""
    model = model or ModelConfig()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifests = {}
    for dataset in read_datasets(raw_dir):
        for split, entry in dataset["splits"].items():
            source = raw_dir / entry
            if not source.is_file():
                raise FileNotFoundError(f"{dataset['name']}: {source} is missing from the download")
            skipped: Counter = Counter()
            samples = reader_for(dataset["format"])(source, skipped)
            inputs = {"url": dataset["url"], "sha256": dataset["sha256"], "entry": entry,
                      "format": dataset["format"], "role": dataset["role"]}
            manifest = write_shards(samples, out_dir / dataset["name"] / split, model, skipped,
                                    shard_size=shard_size, inputs=inputs)
            key = f"{dataset['name']}/{split}"
            manifests[key] = manifest
            log.info("%s: %d samples in %d shard(s), skipped %s", key, manifest["num_samples"],
                     len(manifest["shards"]), manifest["skipped"] or "none")
    return manifests
