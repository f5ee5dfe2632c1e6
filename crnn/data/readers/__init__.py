"""One reader per dataset format, in two phases: list the samples an index names, then load each one.

A reader starts from the file the format is indexed by (an annotation list, a ``.mat``, an ``.xml``, a
``gt.txt``, an LMDB folder; ``find_index`` finds it in a folder); image paths in it are relative to ``images``
(by default that file's folder). ``open_source`` opens it without listing it (but for the small formats listed
whole), and the ``Source`` it returns is cut into ``Part``s that are listed and loaded anywhere: MJSynth's
9 million lines are never listed, let alone pickled, in one process. What a reader passes over is counted in
``skipped`` (``core``); an index that is not of its format is an error naming the file.

To add a format: if its index is text with one sample per line, write ``list_<fmt>(lines: Lines, index: Path,
skipped: Counter) -> list[Entry]`` in ``text.py`` and register it in ``text.LINE_LISTERS``; if it is a small
index listed whole, write ``list_<fmt>(index: Path, skipped: Counter) -> list[Entry]`` in the module of its
file type (``matlab.py``, ``xml_index.py``, or a new one that imports only ``core``) and register it in
``WHOLE_LISTERS`` below. Either way add the file names its index usually has to ``INDEX_PATTERNS`` below.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from crnn.data.readers.core import Entry, IndexChanged, Load, Sample, bulk_allocation, read_capped
from crnn.data.readers.lmdb_store import lmdb_samples
from crnn.data.readers.matlab import list_iiit5k
from crnn.data.readers.parts import Part, Source
from crnn.data.readers.text import LINE_LISTERS, Lines, line_bounds
from crnn.data.readers.xml_index import XmlEntitiesRefused, list_ic03, list_svt
from crnn.files import FileStamp, file_stamp, sha256_of

__all__ = ["FORMATS", "INDEX_PATTERNS", "Entry", "IndexChanged", "Lines", "Load", "Part", "Sample", "Source",
           "XmlEntitiesRefused", "find_index", "line_bounds", "open_source", "read", "read_capped", "reader_for"]

WHOLE_LISTERS: dict[str, Callable[[Path, Counter], list[Entry]]] = {
    "iiit5k": list_iiit5k,
    "svt": list_svt,
    "ic03": list_ic03,
}
FORMATS = (*LINE_LISTERS, *WHOLE_LISTERS, "lmdb")

# The file names each format's index usually has, to find it in a folder (first pattern that matches wins).
INDEX_PATTERNS: dict[str, tuple[str, ...]] = {
    "mjsynth": ("annotation_train.txt", "annotation*.txt"),
    "iiit5k": ("testdata.mat", "*.mat"),
    "svt": ("test.xml", "*.xml"),
    "ic03": ("word.xml", "words.xml"),
    "ic13": ("gt.txt", "*GT*.txt"),
    "ic15": ("gt.txt", "*GT*.txt"),
    "svtp": ("gt.txt", "*.txt"),
    "cute80": ("gt.txt", "*.txt"),
    "lmdb": ("data.mdb",),
}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")


def _unchanged_since(index: Path, stamp: FileStamp) -> None:
    if file_stamp(index) != stamp:
        raise IndexChanged(f"{index}: changed while it was being opened; convert it once it is written")


def open_source(fmt: str, index: Path, images: Path | None = None) -> Source:
    """Opens the index ``index`` of a split: its items counted (and, for a format listed whole, listed)."""
    _check_format(fmt)
    index = Path(index)
    root = index if fmt == "lmdb" else Path(images) if images else index.parent
    skipped: Counter = Counter()
    if fmt in LINE_LISTERS:
        stamp, digest = file_stamp(index), hashlib.sha256()
        bounds = line_bounds(index, digest)
        _unchanged_since(index, stamp)
        return Source(fmt, index, root, len(bounds) - 1, skipped, bounds=bounds, sha256=digest.hexdigest(),
                      stamp=stamp)
    if fmt == "lmdb":
        return Source(fmt, index, root, lmdb_samples(index, skipped), skipped)
    stamp = file_stamp(index)
    with bulk_allocation():  # small files, listed here whole: what changes after this is not read
        entries = WHOLE_LISTERS[fmt](index, skipped)
    digest = sha256_of(index)
    _unchanged_since(index, stamp)
    return Source(fmt, index, root, len(entries), skipped, listed=entries, sha256=digest)


def read(fmt: str, index: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """Every sample of a split, in order, counting what is skipped."""
    yield from open_source(fmt, index, images).samples(skipped)


def reader_for(fmt: str) -> Callable[..., Iterator[Sample]]:
    """``reader(index, skipped, images=None)`` for ``fmt``."""
    _check_format(fmt)
    return partial(read, fmt)


def find_index(fmt: str, root: Path) -> Path:
    """The index a reader of ``fmt`` starts from: ``root`` itself if a file, else found inside it."""
    root = Path(root)
    _check_format(fmt)
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    for pattern in INDEX_PATTERNS[fmt]:
        found = sorted(p for p in root.rglob(pattern) if p.is_file())
        if len(found) > 1:
            listing = ", ".join(str(p.relative_to(root)) for p in found[:5])
            raise ValueError(f"{root}: several {fmt} index files match {pattern!r} ({listing}); pass one of them")
        if found:
            return found[0].parent if fmt == "lmdb" else found[0]
    raise FileNotFoundError(f"{root}: no {fmt} index file ({' or '.join(INDEX_PATTERNS[fmt])}) found in it")
