"""An opened index (``Source``) and the parts it is cut into (``Part``): any contiguous range of an index's
items, listed and loaded in another process from a few numbers, which is how conversion runs in parallel,
resumes, and fans out over pipeline tasks. A part of a text index is its lines' byte span, read again where it
is listed and refused (``IndexChanged``) if the index changed since it was opened; a part of an LMDB is a range
of sample numbers; a part of a format listed whole carries its entries.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crnn.data.readers.core import Entry, IndexChanged, Load, Sample, bulk_allocation, file_loader
from crnn.data.readers.lmdb_store import lmdb_entries, lmdb_loader
from crnn.data.readers.text import LINE_LISTERS, text_lines
from crnn.files import FileStamp, file_stamp


@dataclass(frozen=True)
class Part:
    """The items ``items`` of a split's index: what a process needs to list and load their samples, in a few
    numbers (``Source.part``). Picklable: worker processes and pipeline tasks each take their own parts."""

    fmt: str
    index: Path
    root: Path  # image root, or the LMDB folder
    items: range
    span: tuple[int, int] = (0, 0)  # where the items' lines are in a text index (bytes, end exclusive)
    listed: tuple[Entry, ...] | None = None  # the entries, for a format listed whole (XML, .mat)
    stamp: FileStamp | None = None  # a text index's as it was opened: its bytes must still be those

    def entries(self, skipped: Counter) -> list[Entry]:
        """The part's entries; what its lines hold that is not a sample is counted in ``skipped``."""
        if self.listed is not None:
            return list(self.listed)
        if self.fmt == "lmdb":
            return lmdb_entries(self.items)
        data = self._span()
        with bulk_allocation():
            return LINE_LISTERS[self.fmt](text_lines(data, self.index, skipped, self.items.start + 1),
                                          self.index, skipped)

    def _span(self) -> bytes:
        """The part's lines, read by the byte offsets found when the index was opened; an index changed since
        is refused: its stamp differs, or (a rewrite the clock did not tell) the lines no longer start there."""
        start, stop = self.span
        with open(self.index, "rb") as stream:
            stream.seek(max(start - 1, 0))
            data = stream.read(stop - start + (start > 0))
            stamp = file_stamp(stream.fileno())
        before, data = (data[:1], data[1:]) if start > 0 else (b"\n", data)
        at_line_ends = start == stop or (before == b"\n" and (data.endswith(b"\n") or stop == stamp[0]))
        if (self.stamp is not None and stamp != self.stamp) or not at_line_ends:
            raise IndexChanged(f"{self.index}: changed since the conversion opened it; its lines "
                               f"{self.items.start + 1}-{self.items.stop} are no longer where they were")
        return data

    def loader(self, grayscale: bool = False) -> contextlib.AbstractContextManager[Load]:
        """``load(entry, skipped)`` for this part's samples, from the LMDB or from image files under the root."""
        return (lmdb_loader if self.fmt == "lmdb" else file_loader)(self.root, grayscale)

    def samples(self, skipped: Counter, grayscale: bool = False) -> Iterator[Sample]:
        entries = self.entries(skipped)
        with self.loader(grayscale) as load:
            for entry in entries:
                sample = load(entry, skipped)
                if sample is not None:
                    yield sample


@dataclass
class Source:
    """A split's index, opened (``open_source``): how many items it has and where each starts, not yet listed
    (but for the small formats listed whole)."""

    fmt: str
    index: Path
    root: Path  # image root, or the LMDB folder
    items: int  # lines of a text index, LMDB samples, or entries of a format listed whole
    skipped: Counter = field(default_factory=Counter)  # what opening the whole index passed over
    # A text index: where each line starts, then the end of the file (``line_bounds``).
    bounds: np.ndarray | None = field(default=None, repr=False, compare=False)
    listed: list[Entry] | None = field(default=None, repr=False)  # a format listed whole
    sha256: str | None = None  # the index's digest, of the bytes opened (an LMDB's comes from its download)
    stamp: FileStamp | None = None  # a text index's, as opened (``file_stamp``)

    def part(self, items: range) -> Part:
        """Items ``items`` (a range within ``range(self.items)``), to list and load anywhere."""
        if not (0 <= items.start <= items.stop <= self.items and items.step == 1):
            raise ValueError(f"{self.index}: items {items.start}..{items.stop} are not within its {self.items}")
        span = (int(self.bounds[items.start]), int(self.bounds[items.stop])) if self.bounds is not None else (0, 0)
        listed = tuple(self.listed[items.start:items.stop]) if self.listed is not None else None
        return Part(self.fmt, self.index, self.root, items, span, listed, self.stamp)

    def entries(self, skipped: Counter) -> list[Entry]:
        """Every entry, in order (in one process: a conversion lists by part)."""
        return self._whole(skipped).entries(skipped)

    def samples(self, skipped: Counter, grayscale: bool = False) -> Iterator[Sample]:
        return self._whole(skipped).samples(skipped, grayscale)

    def _whole(self, skipped: Counter) -> Part:
        """Every item as one part; what opening the index passed over is counted in ``skipped``."""
        skipped.update(self.skipped)
        return self.part(range(self.items))
