"""IIIT5K's MATLAB index (``testdata.mat``, ``traindata.mat``), small and listed whole. A file that scipy cannot
read, or without the struct array or its ``ImgName`` and ``GroundTruth`` fields, is an error naming it; a
record whose fields are not text is counted (``malformed_entry``) and passed over.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from crnn.data.readers.core import Entry, skip, under_root


def list_iiit5k(mat_file: Path, skipped: Counter) -> list[Entry]:
    """``testdata.mat`` or ``traindata.mat``: a 1 x N struct array with ``ImgName`` and ``GroundTruth``; a
    record whose fields are not text is counted (``malformed_entry``)."""
    key, records = _mat_records(mat_file)
    entries = []
    for number, record in enumerate(records):
        name, label = _mat_text(record["ImgName"]), _mat_text(record["GroundTruth"])
        if name is None or label is None:
            skip(skipped, "malformed_entry", f"{mat_file} {key}[{number}]", "ImgName or GroundTruth is not text")
        elif under_root(name, skipped, f"{mat_file} {key}[{number}]"):
            entries.append(Entry(name, label, name))
    return entries


def _mat_records(mat_file: Path) -> tuple[str, np.ndarray]:
    import scipy.io

    try:
        data = scipy.io.loadmat(mat_file, squeeze_me=True, struct_as_record=True)
    except Exception as err:  # scipy's parser raises anything from IndexError to MatReadError on a damaged file
        raise ValueError(f"{mat_file}: not a readable MATLAB file ({type(err).__name__}: {err})") from err
    key = next((k for k in ("testdata", "traindata") if k in data), None)
    if key is None:
        raise ValueError(f"{mat_file}: no 'testdata' or 'traindata' struct array")
    records = np.atleast_1d(data[key])
    missing = {"ImgName", "GroundTruth"} - set(records.dtype.names or ())
    if missing:
        raise ValueError(f"{mat_file}: struct array {key!r} lacks field(s) {', '.join(sorted(missing))}")
    return key, records


def _mat_text(value) -> str | None:
    """A MATLAB string as loaded (an empty one comes as an empty character array), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 0:
        return ""
    return None
