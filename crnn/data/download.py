"""The download step: sources -> verified archives -> extracted trees, listed in ``datasets.json``.

``datasets.json`` is the contract with the convert step: for each dataset its name, format, role
(``train`` or ``benchmark``), the URL and digest it was fetched and verified with, and, per split, the file
its reader starts from (relative to the output folder).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from crnn.data.extract import DEFAULT_MAX_BYTES, extract
from crnn.data.fetch import fetch
from crnn.data.files import write_json
from crnn.data.synthetic import SyntheticSpec, build_mirror

log = logging.getLogger(__name__)

DATASETS_FILE = "datasets.json"


def download_synthetic(out_dir: Path, spec: SyntheticSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict]:
    """Renders the synthetic datasets into a local mirror, then fetches them from it like any URL."""
    out_dir = Path(out_dir).resolve()
    mirror = out_dir / "mirror"
    datasets = []
    for entry in build_mirror(spec, mirror):
        url = (mirror / entry.file).as_uri()
        archive = fetch(url, out_dir / "archives" / entry.file, sha256=entry.sha256)
        extract(archive, out_dir / entry.name, max_bytes=max_bytes)
        splits = {"test": entry.entry} if entry.role == "benchmark" else {
            "train": entry.entry, "val": entry.entry.replace("annotation_train", "annotation_val")}
        datasets.append({
            "name": entry.name, "format": entry.format, "role": entry.role, "url": url,
            "sha256": entry.sha256, "splits": {split: f"{entry.name}/{rel}" for split, rel in splits.items()},
        })
        log.info("%s: fetched %s, sha256 %s verified, extracted", entry.name, url, entry.sha256)
    write_json(out_dir / DATASETS_FILE, {"source": "synthetic", "seed": spec.seed, "datasets": datasets})
    return datasets


def read_datasets(raw_dir: Path) -> list[dict[str, Any]]:
    path = Path(raw_dir) / DATASETS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{raw_dir}: no {DATASETS_FILE}; run the download step into this folder first")
    return json.loads(path.read_text())["datasets"]
