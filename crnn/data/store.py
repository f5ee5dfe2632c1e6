"""Where the pipeline's datasets live: one folder per content key under a data root, named in KFP artifacts by
reference rather than carried in them.

The KFP launcher uploads an output artifact folder file by file and downloads every input artifact in full
into the task, so a dataset passed as an artifact would cross the artifact store once per task that reads it.
The data steps write under a data root instead (the datasets volume on a cluster, a folder locally) and their
artifacts hold a reference (``REF_FILE``): the location.

A location's name is the digest of everything its content depends on (``content_key``). A step started again
with the same inputs (a KFP retry, a cache miss, another run) finds the location complete and reuses it; two
runs producing the same key at once take turns (a lock beside it). A location is complete when its
``COMPLETE_FILE`` is there, written last. KFP's cache hands a later run the reference an earlier run wrote;
``resolve`` refuses one whose location is no longer complete (the volume cleaned since), naming it and the way
out, instead of letting a step read half a dataset.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from crnn.files import write_json

log = logging.getLogger(__name__)

REF_FILE = "data-ref.json"
COMPLETE_FILE = ".complete.json"
KINDS = ("raw", "converted")


def content_key(kind: str, inputs: Mapping[str, Any]) -> str:
    """A short digest of ``inputs`` (JSON, keys sorted): the same inputs give the same location."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of data {kind!r}; one of {', '.join(KINDS)}")
    canonical = json.dumps({"kind": kind, **inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def data_root(value: str | Path) -> Path:
    """The pipeline's ``data_root`` setting: an absolute path, the same in every task."""
    if not str(value) or not Path(str(value)).is_absolute():
        raise ValueError(f"data_root must be an absolute path (the datasets volume's mount), got {str(value)!r}")
    return Path(str(value))


def data_location(root: str | Path, kind: str, inputs: Mapping[str, Any]) -> Path:
    """``<root>/<kind>/<content key>``."""
    return data_root(root) / kind / content_key(kind, inputs)


def is_complete(location: Path) -> bool:
    return (Path(location) / COMPLETE_FILE).is_file()


@contextlib.contextmanager
def locked(location: Path) -> Iterator[None]:
    """Holds ``.<name>.lock`` beside ``location``: one producer of a key at a time, across pods sharing the
    volume (flock: on NFSv4 and CephFS the server keeps the lock)."""
    location.parent.mkdir(parents=True, exist_ok=True)
    with open(location.parent / f".{location.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def produce(location: Path, inputs: Mapping[str, Any], make: Callable[[Path], Any]) -> bool:
    """Runs ``make(location)`` unless ``location`` is already complete, then marks it complete with
    ``inputs``; returns whether it ran. ``make`` may find what a failed attempt left and go on from there
    (download and conversion resume)."""
    location = Path(location)
    with locked(location):
        if is_complete(location):
            log.info("%s: complete already (same inputs); reused", location)
            return False
        location.mkdir(parents=True, exist_ok=True)
        make(location)
        write_json(location / COMPLETE_FILE, {"inputs": dict(inputs), "completed_at": time.time()})
        return True


def write_ref(artifact_dir: str | Path, location: Path) -> None:
    """The reference an artifact carries instead of the data: its location (kind and key are in its path)."""
    if not is_complete(location):
        raise ValueError(f"{location}: not complete; only a complete location may be referenced")
    write_json(Path(artifact_dir) / REF_FILE, {"location": str(location)})


def resolve(artifact_dir: str | Path) -> Path:
    """The complete data location an artifact refers to."""
    ref = Path(artifact_dir) / REF_FILE
    if not ref.is_file():
        raise ValueError(f"{artifact_dir}: no {REF_FILE}; not the output of a data step of this pipeline")
    location = Path(json.loads(ref.read_text())["location"])
    if not is_complete(location):
        raise FileNotFoundError(
            f"{location} (referenced by {ref}) is missing or incomplete: the datasets volume was cleaned or is "
            "not mounted at the same path since the step that wrote it ran, perhaps in an earlier run whose "
            "result KFP's cache reused. Run the pipeline again with caching off (crnn pipeline submit "
            "--no-cache, or enable_caching=False) to write it again.")
    return location
