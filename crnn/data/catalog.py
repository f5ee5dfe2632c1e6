"""The dataset catalog (``catalog.json``, data not code) read into typed entries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

CATALOG_FILE = Path(__file__).with_name("catalog.json")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
FILTERS = ("alnum", "alnum_min3")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: str | None = None
    # Folder (inside the dataset's folder) an archive is extracted into; "" is the dataset's folder itself.
    into: str = ""
    confirmed: bool = True

    @property
    def is_archive(self) -> bool:
        return self.name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Split:
    index: str | None = None  # None: found by the format's usual file names
    images: str | None = None
    filter: str | None = None
    unfiltered: bool = False
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.filter is not None and self.filter not in FILTERS:
            raise ValueError(f"unknown split filter {self.filter!r}; known: {', '.join(FILTERS)}")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    format: str
    role: str
    files: tuple[RemoteFile, ...]
    splits: dict[str, Split] = field(default_factory=dict)
    description: str = ""
    page: str = ""
    notes: str = ""

    def mirrored(self, file: RemoteFile, mirror: str) -> str:
        """The file's address on an internal mirror: ``<mirror>/<dataset>/<file name>``."""
        return f"{mirror.rstrip('/')}/{self.name}/{file.name}"


def _inside(entry: str, what: str, value: str | None) -> None:
    """Paths in the catalog stay inside the dataset's folder."""
    path = PurePosixPath(value or "")
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"catalog entry {entry!r}: {what} {value!r} must be a relative path inside the dataset")


def _entry(name: str, data: dict[str, Any]) -> DatasetEntry:
    known = {"name", "url", "md5", "sha256", "size", "into", "confirmed"}
    files = []
    for raw in data["files"]:
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"catalog entry {name!r}: unknown file key(s) {', '.join(sorted(unknown))}")
        if PurePosixPath(raw["name"]).name != raw["name"]:
            raise ValueError(f"catalog entry {name!r}: file name {raw['name']!r} must not contain a folder")
        _inside(name, "into", raw.get("into"))
        files.append(RemoteFile(**raw))
    splits = {split: Split(**spec) for split, spec in data.get("splits", {}).items()}
    for split in splits.values():
        _inside(name, "index", split.index)
        _inside(name, "images", split.images)
    return DatasetEntry(
        name=name, format=data["format"], role=data["role"], files=tuple(files), splits=splits,
        description=data.get("description", ""), page=data.get("page", ""), notes=data.get("notes", ""),
    )


@lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_FILE) -> dict[str, DatasetEntry]:
    data = json.loads(Path(path).read_text())
    return {name: _entry(name, spec) for name, spec in data["datasets"].items()}


def catalog_entry(name: str, path: Path = CATALOG_FILE) -> DatasetEntry:
    catalog = load_catalog(path)
    if name not in catalog:
        raise ValueError(f"{name!r} is not in the catalog; known: {', '.join(sorted(catalog))}, "
                         "or 'custom' with --source")
    return catalog[name]


def custom_entry(url: str, fmt: str, name: str = "custom", sha256: str | None = None,
                 md5: str | None = None, role: str = "benchmark") -> DatasetEntry:
    """An entry for data outside the catalog; its split's index is found by the format's usual file names.
    ``name`` becomes a folder of the download folder, which its extraction replaces: a plain name only."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"--name {name!r}: the dataset's folder must be a plain name (no path, not '.' or '..')")
    file_name = PurePosixPath(url.split("?")[0]).name or "download"
    return DatasetEntry(name=name, format=fmt, role=role,
                        files=(RemoteFile(file_name, url, md5=md5, sha256=sha256),),
                        splits={"test" if role == "benchmark" else "train": Split()})
