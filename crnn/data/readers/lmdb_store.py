"""clovaai-style LMDB datasets: ``num-samples``, then ``image-%09d`` and ``label-%09d`` from 1. The samples are
numbered, not listed: a part is a range of numbers, loaded through one read-only environment per folder and
process. A ``num-samples`` that is not a count is an error naming the folder; a sample it names but the
database lacks is counted (``missing_key``), and so is a label that is not UTF-8 (``label_not_utf8``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from crnn.data.readers.core import Entry, Load, Sample, decode_counted, skip

log = logging.getLogger(__package__)  # one logger for the whole reader family

_LMDB_ENVS: dict[Path, object] = {}


def _lmdb_env(folder: Path):
    """One read-only environment per folder and process (environments do not survive a fork or pickling)."""
    import lmdb

    if folder not in _LMDB_ENVS:
        _LMDB_ENVS[folder] = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False,
                                       max_readers=8)
    return _LMDB_ENVS[folder]


def lmdb_samples(folder: Path, skipped: Counter) -> int:
    """How many samples a clovaai LMDB holds: ``num-samples``, then ``image-%09d`` and ``label-%09d`` from 1.
    Samples the count names but the database lacks are counted as ``missing_key`` when loaded; a count beyond
    the number of records (which no database of it can fill) is cut to that many and the rest counted at once."""
    if not (Path(folder) / "data.mdb").is_file():
        raise FileNotFoundError(f"{folder}: no data.mdb; is this an LMDB dataset folder?")
    env = _lmdb_env(Path(folder))
    with env.begin() as txn:
        raw = txn.get(b"num-samples")
    try:
        count = int(raw.decode())
    except (AttributeError, UnicodeDecodeError, ValueError):
        raise ValueError(f"{folder}: 'num-samples' is {raw!r}, not a count") from None
    if count < 0:
        raise ValueError(f"{folder}: 'num-samples' is {count}, not a count")
    records = env.stat()["entries"]
    if count > records:
        log.warning("%s: 'num-samples' says %d but the database has %d records: %d samples counted missing",
                    folder, count, records, count - records)
        skipped["missing_key"] += count - records
    return min(count, records)


def lmdb_entries(items: range) -> list[Entry]:
    """The entries of samples ``items`` (counted from 0; the keys count from 1)."""
    return [Entry(f"{i:09d}", None, f"{i:09d}") for i in range(items.start + 1, items.stop + 1)]


@contextlib.contextmanager
def lmdb_loader(folder: Path, grayscale: bool = False) -> Iterator[Load]:
    """``load(entry, skipped)`` for an LMDB's samples; nothing to close: the environment is kept per process."""
    yield partial(_load_lmdb, folder, grayscale=grayscale)


def _load_lmdb(folder: Path, entry: Entry, skipped: Counter, grayscale: bool) -> Sample | None:
    with _lmdb_env(folder).begin() as txn:
        image_bytes = txn.get(f"image-{entry.image}".encode())
        label_bytes = txn.get(f"label-{entry.image}".encode())
    if image_bytes is None or label_bytes is None:
        return skip(skipped, "missing_key", f"{folder} sample {entry.image}")
    try:
        label = label_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return skip(skipped, "label_not_utf8", f"{folder} sample {entry.image}")
    image = decode_counted(image_bytes, grayscale, skipped, f"{folder} sample {entry.image}")
    return None if image is None else Sample(image, label, entry.source_id)
