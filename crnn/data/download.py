"""The download step: catalog entries -> verified files -> extracted trees, listed in ``datasets.json``.

``datasets.json`` is the contract with the convert step: for each dataset its name, format and role, every
file with the URL it came from and its sha256, and per split the file its reader starts from (relative to
the output folder) with the split's filter.

A dataset whose folder holds a completion marker matching the verified files is neither fetched nor
extracted again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from crnn.data.catalog import DatasetEntry, RemoteFile
from crnn.data.extract import DEFAULT_MAX_BYTES, extract
from crnn.data.fetch import fetch, redact
from crnn.data.synthetic import SyntheticSpec, build_mirror
from crnn.files import atomic_path, sha256_of, write_json

log = logging.getLogger(__name__)

DATASETS_FILE = "datasets.json"
ARCHIVES_DIR = "archives"
MARKER = ".crnn-complete.json"
DAMAGE = ".crnn-extraction-skipped.json"  # corrupt or truncated archive members, by archive and reason


def _source_url(entry: DatasetEntry, file: RemoteFile, mirror: str | None, source: str | None) -> str:
    if source:
        return source
    return entry.mirrored(file, mirror) if mirror else file.url


def download_entry(entry: DatasetEntry, out_dir: Path, mirror: str | None = None, source: str | None = None,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Fetches, verifies and extracts one dataset into ``out_dir/<name>``; returns its datasets.json record."""
    out_dir = Path(out_dir).resolve()
    if source and len(entry.files) != 1:
        raise ValueError(f"{entry.name}: --source names one file but the dataset has {len(entry.files)}; "
                         "use --mirror")
    target = out_dir / entry.name
    files = []
    # Archives first: one extracted into the dataset's own folder replaces that folder.
    for file in sorted(entry.files, key=lambda f: (not f.is_archive, f.into)):
        url = _source_url(entry, file, mirror, source)
        verified = bool(file.sha256 or file.md5)
        if not file.confirmed and not (mirror or source):
            log.warning("%s: %s is not a confirmed address; if it fails, use --mirror", entry.name, redact(url))
        if not verified:
            log.warning("%s: %s has no published checksum; only damage found when extracting it is noticed",
                        entry.name, file.name)
        local = fetch(url, out_dir / ARCHIVES_DIR / entry.name / file.name, sha256=file.sha256, md5=file.md5)
        # fetch has just checked a published sha256; only the others need hashing (archives run to gigabytes).
        digest = file.sha256.lower() if file.sha256 else sha256_of(local)
        files.append({"name": file.name, "url": redact(url), "sha256": digest, "into": file.into,
                      "archive": file.is_archive, "verified": verified})
    marker = target / MARKER
    digests = {file["name"]: file["sha256"] for file in files}
    if marker.is_file() and json.loads(marker.read_text()) == digests:
        log.info("%s: already downloaded, verified and extracted", entry.name)
    else:
        marker.unlink(missing_ok=True)
        damage: dict[str, dict[str, int]] = {}
        for file in files:
            local = out_dir / ARCHIVES_DIR / entry.name / file["name"]
            if file["archive"]:
                skipped = extract(local, target / file["into"], max_bytes=max_bytes)
                if skipped:
                    damage[file["name"]] = dict(skipped)
            else:
                with atomic_path(target / file["into"] / file["name"]) as copy:
                    shutil.copyfile(local, copy)
        write_json(target / DAMAGE, damage)
        unverified = [f["name"] for f in files if f["name"] in damage and not f["verified"]]
        for name in unverified:
            # Damage in a file no checksum vouches for may be a broken download: fetch it again next time.
            (out_dir / ARCHIVES_DIR / entry.name / name).unlink()
            log.warning("%s: %s had damaged members and no published checksum; it will be fetched again",
                        entry.name, name)
        if not unverified:
            write_json(marker, digests)  # last: the marker says everything before it is complete
        log.info("%s: fetched, verified and extracted %d file(s)%s", entry.name, len(files),
                 f"; skipped in extraction: {damage}" if damage else "")
    return {
        "name": entry.name, "format": entry.format, "role": entry.role, "files": files,
        "extraction_skipped": json.loads((target / DAMAGE).read_text()) if (target / DAMAGE).is_file() else {},
        "splits": {split: _split_record(entry.name, spec) for split, spec in entry.splits.items()},
    }


def _split_record(name: str, split) -> dict[str, Any]:
    record = dataclasses.asdict(split)
    record["index"] = f"{name}/{split.index}" if split.index else name
    record["images"] = f"{name}/{split.images}" if split.images else None
    return record


def download_all(entries: list[DatasetEntry], out_dir: Path, mirror: str | None = None,
                 source: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 origin: dict[str, Any] | None = None, synthetic: bool = False) -> list[dict[str, Any]]:
    """Downloads every entry and writes ``datasets.json`` (merged with what the folder already lists).
    ``synthetic``: the entries are rendered stand-ins named after real datasets, which each record says."""
    out_dir = Path(out_dir)
    records = {r["name"]: r for r in _existing(out_dir)}
    for entry in entries:
        records[entry.name] = download_entry(entry, out_dir, mirror, source, max_bytes) | {"synthetic": synthetic}
    write_json(out_dir / DATASETS_FILE, {"origin": origin or {}, "datasets": list(records.values())})
    return [records[entry.name] for entry in entries]


def download_synthetic(out_dir: Path, spec: SyntheticSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict]:
    """Renders the synthetic datasets into a local mirror, then fetches them from it like any URL."""
    out_dir = Path(out_dir).resolve()
    entries = build_mirror(spec, out_dir / "mirror")
    return download_all(entries, out_dir, max_bytes=max_bytes,
                        origin={"source": "synthetic", **dataclasses.asdict(spec)}, synthetic=True)


def _existing(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / DATASETS_FILE
    return json.loads(path.read_text())["datasets"] if path.is_file() else []


def read_datasets(raw_dir: Path) -> list[dict[str, Any]]:
    path = Path(raw_dir) / DATASETS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{raw_dir}: no {DATASETS_FILE}; run the download step into this folder first")
    try:
        datasets = json.loads(path.read_text())["datasets"]
        problems = [f"{record.get('name', '?')} lacks {key!r}" for record in datasets
                    for key in ("name", "format", "role", "files", "splits") if key not in record]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a datasets listing ({type(err).__name__}: {err})") from None
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    return datasets
