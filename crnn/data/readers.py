"""One reader per dataset format, in two phases: list the samples an index names, then load each one.

An index is cut into items that can be listed apart: the lines of a text index (MJSynth, IC13/IC15, SVTP,
CUTE80), the samples of an LMDB, the entries of an XML or ``.mat`` index (small sets, listed whole). Any
contiguous range of items (a ``Part``) is listed and loaded in another process from a few numbers, which is how
conversion runs in parallel, resumes, and fans out over pipeline tasks: MJSynth's 9 million lines are never
listed, let alone pickled, in one process.

A reader starts from the file the format is indexed by (an annotation list, a ``.mat``, an ``.xml``, a
``gt.txt``, an LMDB folder); image paths in it are relative to ``images`` (by default that file's folder).
A missing or undecodable image, a non-UTF-8 label, a missing LMDB key or a malformed line or box is counted
in ``skipped`` and passed over: never fatal, never silent (the log names the file and line, or the sample).
An image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels is not decoded (``image_too_large``):
decoding allocates what the header says, and a 400 KB PNG can declare 20000 x 20000 pixels.

An index that is not of its format is an error naming the file: an XML index that is not well-formed (invalid
UTF-8 included) or declares entities (refused unexpanded: no external file is read, no entity bomb grows), a
``.mat`` without the struct array and fields, an LMDB whose ``num-samples`` is not a count.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from defusedxml import EntitiesForbidden

from crnn.data.images import imdecode, oversized
from crnn.files import FileStamp, file_stamp, sha256_of

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    """A decoded word image (H x W x 3 BGR, or H x W grayscale; uint8), its ground truth as written, and
    where it came from. (Tuples, as ``Entry``: millions are made, and a frozen dataclass costs 0.7 us each
    to make, a tuple 0.2.)"""

    image: np.ndarray
    label: str
    source_id: str


class Entry(NamedTuple):
    """One sample as its index lists it, before its image is read."""

    image: str  # a path relative to the image root; for LMDB, the sample's number
    label: str | None  # None: stored beside the image (LMDB)
    source_id: str
    box: tuple[int, int, int, int] | None = None  # (x, y, width, height) of a word on a scene image


Load = Callable[[Entry, Counter], "Sample | None"]


class IndexChanged(RuntimeError):
    """A text index was written to while a conversion read it by byte offsets."""


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
            return [Entry(f"{i:09d}", None, f"{i:09d}") for i in range(self.items.start + 1, self.items.stop + 1)]
        data = self._span()
        with bulk_allocation():
            return LINE_LISTERS[self.fmt](_text_lines(data, self.index, skipped, self.items.start + 1),
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

    @contextlib.contextmanager
    def loader(self, grayscale: bool = False) -> Iterator[Load]:
        """``load(entry, skipped)`` for this part's samples. Image files are opened relative to the image
        folder, held open meanwhile, so that an open does not walk the whole path again for every image."""
        if self.fmt == "lmdb":
            yield partial(_load_lmdb, self.root, grayscale=grayscale)
            return
        try:  # O_PATH: a folder that may be searched but not listed still works
            folder: int | OSError = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
        except OSError as err:  # raised again for each image, as opening it by its whole path would be
            folder = err
        try:
            yield partial(_load_file, str(self.root), folder, grayscale)
        finally:
            if isinstance(folder, int):
                os.close(folder)

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


def _load_file(root: str, folder: int | OSError, grayscale: bool, entry: Entry, skipped: Counter) -> Sample | None:
    """An image file's sample; ``folder``: the image root, open, or why it could not be opened."""
    try:
        if isinstance(folder, OSError):  # a new one each time: raising one object again grows its traceback
            raise OSError(folder.errno, folder.strerror, folder.filename)
        data = read_capped(entry.image, _MAX_IMAGE_BYTES + 1, folder)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return _skip(skipped, "missing_image", os.path.join(root, entry.image))
    except OSError as err:
        if err.errno not in _PERMANENT:
            raise  # a passing I/O error must not turn into a skipped sample that a resume then trusts
        return _skip(skipped, "unreadable_image", os.path.join(root, entry.image), str(err))
    if len(data) > _MAX_IMAGE_BYTES:
        return _skip(skipped, "image_too_large", os.path.join(root, entry.image))
    image = _decode_counted(data, grayscale, skipped, entry.image, root)
    if image is None:
        return None
    if entry.box is not None:
        image = _crop(image, entry.box)
        if image is None:
            return _skip(skipped, "box_outside_image", f"{os.path.join(root, entry.image)} {entry.source_id}")
    return Sample(image, entry.label, entry.source_id)


@contextlib.contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pauses the cycle collector while millions of entries are made: they are tuples of strings, which form
    no cycles, yet each collection would scan all those made so far (a quarter of listing's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_MAX_IMAGE_BYTES = 64 << 20  # a word image is kilobytes; anything this size is not one
_CHUNK = 1 << 16
_PERMANENT = {errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP}


def read_capped(path: str, cap: int, folder: int | None = None) -> bytes:
    """At most ``cap`` bytes of the file (``path`` relative to the open folder ``folder``, if given). Read
    in small chunks: ``read(cap)`` would allocate ``cap`` bytes for every kilobyte-sized word image, which
    cost as much as decoding it."""
    fd = os.open(path, os.O_RDONLY, dir_fd=folder)
    try:
        first = os.read(fd, min(cap, _CHUNK))
        if len(first) < _CHUNK or len(first) == cap:  # a short read of a regular file is its end:
            return first  # one read() per word image, and no list around it
        chunks, size = [first], len(first)
        while size < cap:
            want = min(cap - size, _CHUNK)
            chunks.append(chunk := os.read(fd, want))
            size += len(chunk)
            if len(chunk) < want:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def _decode_counted(data: bytes, grayscale: bool, skipped: Counter, where: str, root: str = "") -> np.ndarray | None:
    """The decoded image, or None with ``image_too_large`` or ``undecodable_image`` counted. The log names the
    sample as ``where`` under ``root``, joined only then: the path is not needed for an image that decodes."""
    if not data:
        return _skip(skipped, "undecodable_image", os.path.join(root, where), "empty")
    too_large = oversized(data)
    if too_large:
        return _skip(skipped, "image_too_large", os.path.join(root, where), too_large)
    image = imdecode(data, grayscale)
    return image if image is not None else _skip(skipped, "undecodable_image", os.path.join(root, where))


def _relative(path: str, skipped: Counter, where: object, line: int | None = None) -> bool:
    """Image paths in an index stay under the image root: absolute or ``..`` paths are skipped and counted, and
    so are paths holding a NUL byte, which no file name can. The log names ``where`` (``where:line`` when a
    line is given), formatted only then: this runs for every line of an index."""
    if "\0" not in path and ".." not in path and not path.startswith("/"):
        return True
    where = where if line is None else f"{where}:{line}"
    if "\0" in path:
        _skip(skipped, "malformed_line", where, f"{path!r} holds a NUL byte")
        return False
    if path.startswith("/") or (".." in path and ".." in path.replace("\\", "/").split("/")):
        _skip(skipped, "path_outside_root", where, repr(path))
        return False
    return True


def _skip(skipped: Counter, reason: str, where, detail: str = "") -> None:
    skipped[reason] += 1
    log.warning("skipped %s: %s%s", where, reason.replace("_", " "), f" ({detail})" if detail else "")
    return None


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The box clamped to the image, or None when too little of it is inside."""
    x, y, w, h = box
    height, width = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return image[y0:y1, x0:x1].copy()


_LMDB_ENVS: dict[Path, object] = {}


def _lmdb_env(folder: Path):
    """One read-only environment per folder and process (environments do not survive a fork or pickling)."""
    import lmdb

    if folder not in _LMDB_ENVS:
        _LMDB_ENVS[folder] = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False,
                                       max_readers=8)
    return _LMDB_ENVS[folder]


def _load_lmdb(folder: Path, entry: Entry, skipped: Counter, grayscale: bool) -> Sample | None:
    with _lmdb_env(folder).begin() as txn:
        image_bytes = txn.get(f"image-{entry.image}".encode())
        label_bytes = txn.get(f"label-{entry.image}".encode())
    if image_bytes is None or label_bytes is None:
        return _skip(skipped, "missing_key", f"{folder} sample {entry.image}")
    try:
        label = label_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return _skip(skipped, "label_not_utf8", f"{folder} sample {entry.image}")
    image = _decode_counted(image_bytes, grayscale, skipped, f"{folder} sample {entry.image}")
    return None if image is None else Sample(image, label, entry.source_id)


Lines = Iterator[tuple[int, str]]


def _text_lines(data: bytes, path: Path, skipped: Counter, first: int = 1) -> Lines:
    """(line number, line) of a text index's bytes whose first line is number ``first``; a UTF-8 BOM removed,
    blank lines passed over, non-UTF-8 lines counted and skipped. Lines end at ``\n`` only (a ``\r`` before it
    is stripped), as ``line_bounds`` cuts them: a stray ``\r`` inside a line must not shift the numbering."""
    for number, raw in enumerate(data.split(b"\n"), start=first):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            _skip(skipped, "label_not_utf8", f"{path}:{number}")
            continue
        if line:
            yield number, line


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


def list_mjsynth(lines: Lines, annotation: Path, skipped: Counter) -> list[Entry]:
    """``annotation_*.txt`` lines ``./3000/7/182_slinking_71711.jpg 71711``; the label is in the file name."""
    entries = []
    for number, line in lines:
        rel = line.split(" ", 1)[0]
        name = rel[rel.rfind("/") + 1:]  # the file name and its stem, without pathlib: this runs per line
        parts = name[:name.rfind(".")].split("_") if "." in name else name.split("_")
        if len(parts) < 3 or not parts[1]:
            _skip(skipped, "malformed_line", f"{annotation}:{number}", f"{rel!r} is not <n>_<word>_<index>")
            continue
        if _relative(rel, skipped, annotation, number):
            entries.append(Entry(rel, parts[1], rel))
    return entries


def list_iiit5k(mat_file: Path, skipped: Counter) -> list[Entry]:
    """``testdata.mat`` or ``traindata.mat``: a 1 x N struct array with ``ImgName`` and ``GroundTruth``; a
    record whose fields are not text is counted (``malformed_entry``)."""
    key, records = _mat_records(mat_file)
    entries = []
    for number, record in enumerate(records):
        name, label = _mat_text(record["ImgName"]), _mat_text(record["GroundTruth"])
        if name is None or label is None:
            _skip(skipped, "malformed_entry", f"{mat_file} {key}[{number}]", "ImgName or GroundTruth is not text")
        elif _relative(name, skipped, f"{mat_file} {key}[{number}]"):
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


class XmlEntitiesRefused(EntitiesForbidden):
    """An XML index that declares entities: refused before any is expanded, so no external file (XXE) is read
    and no entity bomb grows. Still a defusedxml ``EntitiesForbidden`` (and a ``ValueError``), naming the file."""

    def __init__(self, xml_file: Path, err: EntitiesForbidden) -> None:
        super().__init__(err.name, err.value, err.base, err.sysid, err.pubid, err.notation_name)
        self.file = xml_file

    def __str__(self) -> str:
        where = f" (SYSTEM {self.sysid!r})" if self.sysid else ""
        return f"{self.file}: refused: it declares the XML entity {self.name!r}{where}; entities are never expanded"


def _xml_root(xml_file: Path):
    """The root element of an XML index, parsed by defusedxml: entity declarations refused, external
    references never fetched; a file that is not well-formed XML is an error naming it."""
    from defusedxml import DefusedXmlException, ElementTree

    try:
        return ElementTree.parse(xml_file).getroot()
    except EntitiesForbidden as err:
        raise XmlEntitiesRefused(Path(xml_file), err) from None
    except (DefusedXmlException, ElementTree.ParseError) as err:
        raise ValueError(f"{xml_file}: not a usable XML index: {err}") from None


def list_svt(xml_file: Path, skipped: Counter) -> list[Entry]:
    """``test.xml``: word boxes on scene images. Each box is cropped when loaded, clamped to the image, and
    skipped when less than 2 x 2 pixels of it are inside (``box_outside_image``); a box whose numbers are not
    integers, or whose width or height is not positive, is ``malformed_box``."""
    entries = []
    for image_node in _xml_root(xml_file).iter("image"):
        name = (image_node.findtext("imageName") or "").strip()
        rects = list(image_node.iter("taggedRectangle"))
        if not _relative(name, Counter(), xml_file):
            skipped["path_outside_root"] += len(rects)
            continue
        for index, rect in enumerate(rects):
            try:
                box = tuple(int(rect.get(k)) for k in ("x", "y", "width", "height"))
            except (TypeError, ValueError):
                _skip(skipped, "malformed_box", f"{xml_file} {name}#{index}", "x, y, width, height not integers")
                continue
            if box[2] <= 0 or box[3] <= 0:
                _skip(skipped, "malformed_box", f"{xml_file} {name}#{index}", f"width x height {box[2]} x {box[3]}")
                continue
            entries.append(Entry(name, (rect.findtext("tag") or "").strip(), f"{name}#{index}", box))
    return entries


def list_ic03(xml_file: Path, skipped: Counter) -> list[Entry]:
    """ICDAR 2003 ``word.xml``: ``<image file="word/1/1.jpg" tag="311" />``."""
    entries = []
    for index, node in enumerate(_xml_root(xml_file).iter("image")):
        name, label = node.get("file"), node.get("tag")
        if not name or label is None:
            _skip(skipped, "malformed_entry", f"{xml_file} image {index}", "no file= or tag=")
            continue
        if _relative(name, skipped, xml_file):
            entries.append(Entry(name, label, name))
    return entries


def list_ic13(lines: Lines, gt_file: Path, skipped: Counter) -> list[Entry]:
    """ICDAR 2013/2015 task 3 ``gt.txt``: ``word_1.png, "Tiredness"`` (quoted, may start with a BOM)."""
    entries = []
    for number, line in lines:
        name, sep, label = line.partition(",")
        if not sep:
            _skip(skipped, "malformed_line", f"{gt_file}:{number}", "no comma")
            continue
        label = label.strip()
        if len(label) >= 2 and label[0] == label[-1] == '"':
            label = label[1:-1].replace('\\"', '"')
        if _relative(name.strip(), skipped, gt_file, number):
            entries.append(Entry(name.strip(), label, name.strip()))
    return entries


def list_image_label(lines: Lines, list_file: Path, skipped: Counter) -> list[Entry]:
    """SVTP ``13_15_0_par.jpg WYNDHAM`` and CUTE80 ``timage/001.jpg RONALDO ...`` lines: image, label, rest."""
    entries = []
    for number, line in lines:
        parts = line.split()
        if len(parts) < 2:
            _skip(skipped, "malformed_line", f"{list_file}:{number}", "expected '<image> <label>'")
            continue
        if _relative(parts[0], skipped, list_file, number):
            entries.append(Entry(parts[0], parts[1], parts[0]))
    return entries


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


LINE_LISTERS: dict[str, Callable[[Lines, Path, Counter], list[Entry]]] = {
    "mjsynth": list_mjsynth,
    "ic13": list_ic13,
    "ic15": list_ic13,  # the same gt.txt form; IC15's files often start with a BOM, which _text_lines drops
    "svtp": list_image_label,
    "cute80": list_image_label,
}
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
