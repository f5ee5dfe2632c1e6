"""Line-based indexes: MJSynth annotation lists, IC13/IC15 ``gt.txt`` and the image-label lists of SVTP and
CUTE80. Such an index is cut by lines: ``line_bounds`` finds where each line starts without decoding any, so
that a part (a range of lines) is read by byte offsets and listed in another process; ``text_lines`` decodes
a part's bytes into numbered lines, and the lister registered for the format in ``LINE_LISTERS`` turns them
into entries.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from crnn.data.readers.core import Entry, skip, under_root

Lines = Iterator[tuple[int, str]]

_SCAN = 1 << 24


def line_bounds(path: Path, digest: hashlib._Hash | None = None) -> np.ndarray:
    """Where each line of a text file starts, then where the file ends: line ``i`` is bytes
    ``bounds[i]:bounds[i + 1]``. Found by numpy, 16 MiB at a time, without decoding or splitting anything;
    ``digest`` (a ``hashlib`` object), if given, is updated with the same bytes, so the file is read once."""
    size = Path(path).stat().st_size
    starts = [np.zeros(1, np.int64)]
    if size:
        data = np.memmap(path, np.uint8, mode="r")
        for offset in range(0, size, _SCAN):
            chunk = data[offset:offset + _SCAN]
            if digest is not None:
                digest.update(chunk)
            starts.append(np.flatnonzero(chunk == 10) + (offset + 1))
    bounds = np.concatenate(starts)
    return bounds if bounds[-1] == size else np.append(bounds, size)


def text_lines(data: bytes, path: Path, skipped: Counter, first: int = 1) -> Lines:
    """(line number, line) of a text index's bytes whose first line is number ``first``; a UTF-8 BOM removed,
    blank lines passed over, non-UTF-8 lines counted and skipped. Lines end at ``\n`` only (a ``\r`` before it
    is stripped), as ``line_bounds`` cuts them: a stray ``\r`` inside a line must not shift the numbering."""
    for number, raw in enumerate(data.split(b"\n"), start=first):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            skip(skipped, "label_not_utf8", f"{path}:{number}")
            continue
        if line:
            yield number, line


def list_mjsynth(lines: Lines, annotation: Path, skipped: Counter) -> list[Entry]:
    """``annotation_*.txt`` lines ``./3000/7/182_slinking_71711.jpg 71711``; the label is in the file name."""
    entries = []
    for number, line in lines:
        rel = line.split(" ", 1)[0]
        name = rel[rel.rfind("/") + 1:]  # the file name and its stem, without pathlib: this runs per line
        parts = name[:name.rfind(".")].split("_") if "." in name else name.split("_")
        if len(parts) < 3 or not parts[1]:
            skip(skipped, "malformed_line", f"{annotation}:{number}", f"{rel!r} is not <n>_<word>_<index>")
            continue
        if under_root(rel, skipped, annotation, number):
            entries.append(Entry(rel, parts[1], rel))
    return entries


def list_ic13(lines: Lines, gt_file: Path, skipped: Counter) -> list[Entry]:
    """ICDAR 2013/2015 task 3 ``gt.txt``: ``word_1.png, "Tiredness"`` (quoted, may start with a BOM)."""
    entries = []
    for number, line in lines:
        name, sep, label = line.partition(",")
        if not sep:
            skip(skipped, "malformed_line", f"{gt_file}:{number}", "no comma")
            continue
        label = label.strip()
        if len(label) >= 2 and label[0] == label[-1] == '"':
            label = label[1:-1].replace('\\"', '"')
        if under_root(name.strip(), skipped, gt_file, number):
            entries.append(Entry(name.strip(), label, name.strip()))
    return entries


def list_image_label(lines: Lines, list_file: Path, skipped: Counter) -> list[Entry]:
    """SVTP ``13_15_0_par.jpg WYNDHAM`` and CUTE80 ``timage/001.jpg RONALDO ...`` lines: image, label, rest."""
    entries = []
    for number, line in lines:
        parts = line.split()
        if len(parts) < 2:
            skip(skipped, "malformed_line", f"{list_file}:{number}", "expected '<image> <label>'")
            continue
        if under_root(parts[0], skipped, list_file, number):
            entries.append(Entry(parts[0], parts[1], parts[0]))
    return entries


LINE_LISTERS: dict[str, Callable[[Lines, Path, Counter], list[Entry]]] = {
    "mjsynth": list_mjsynth,
    "ic13": list_ic13,
    "ic15": list_ic13,  # the same gt.txt form; IC15's files often start with a BOM, which text_lines drops
    "svtp": list_image_label,
    "cute80": list_image_label,
}
