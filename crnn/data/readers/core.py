"""What every reader shares: the ``Sample`` and ``Entry`` types, loading an entry's image file from under the
image root, decoding with counted skips, and the GC pause for listing millions of entries. A missing or
undecodable image, a non-UTF-8 label, a missing LMDB key or a malformed line or box is counted in ``skipped``
(``skip``) and passed over: never fatal, never silent (the log names the file and line, or the sample). An
image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels is not decoded (``image_too_large``):
decoding allocates what the header says, and a 400 KB PNG can declare 20000 x 20000 pixels.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from crnn.data.images import imdecode, oversized

log = logging.getLogger(__package__)  # one logger for the whole reader family


class Sample(NamedTuple):
    """A decoded word image (H x W x 3 BGR, or H x W grayscale; uint8), its ground truth as written, and
    where it came from. (Tuples, as ``Entry``: millions are made, and a tuple is much cheaper to make than a
    frozen dataclass.)"""

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


@contextlib.contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pauses the cycle collector while millions of entries are made: they are tuples of strings, which form
    no cycles, yet each collection would scan all those made so far, a large share of listing's time."""
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


@contextlib.contextmanager
def file_loader(root: Path, grayscale: bool = False) -> Iterator[Load]:
    """``load(entry, skipped)`` for samples whose images are files under ``root``. Image files are opened
    relative to the image folder, held open meanwhile, so that an open does not walk the whole path again for
    every image."""
    try:  # O_PATH: a folder that may be searched but not listed still works
        folder: int | OSError = os.open(root, os.O_PATH | os.O_DIRECTORY)
    except OSError as err:  # raised again for each image, as opening it by its whole path would be
        folder = err
    try:
        yield partial(_load_file, str(root), folder, grayscale)
    finally:
        if isinstance(folder, int):
            os.close(folder)


def _load_file(root: str, folder: int | OSError, grayscale: bool, entry: Entry, skipped: Counter) -> Sample | None:
    """An image file's sample; ``folder``: the image root, open, or why it could not be opened."""
    try:
        if isinstance(folder, OSError):  # a new one each time: raising one object again grows its traceback
            raise OSError(folder.errno, folder.strerror, folder.filename)
        data = read_capped(entry.image, _MAX_IMAGE_BYTES + 1, folder)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return skip(skipped, "missing_image", os.path.join(root, entry.image))
    except OSError as err:
        if err.errno not in _PERMANENT:
            raise  # a passing I/O error must not turn into a skipped sample that a resume then trusts
        return skip(skipped, "unreadable_image", os.path.join(root, entry.image), str(err))
    if len(data) > _MAX_IMAGE_BYTES:
        return skip(skipped, "image_too_large", os.path.join(root, entry.image))
    image = decode_counted(data, grayscale, skipped, entry.image, root)
    if image is None:
        return None
    if entry.box is not None:
        image = _crop(image, entry.box)
        if image is None:
            return skip(skipped, "box_outside_image", f"{os.path.join(root, entry.image)} {entry.source_id}")
    return Sample(image, entry.label, entry.source_id)


def decode_counted(data: bytes, grayscale: bool, skipped: Counter, where: str, root: str = "") -> np.ndarray | None:
    """The decoded image, or None with ``image_too_large`` or ``undecodable_image`` counted. The log names the
    sample as ``where`` under ``root``, joined only then: the path is not needed for an image that decodes."""
    if not data:
        return skip(skipped, "undecodable_image", os.path.join(root, where), "empty")
    too_large = oversized(data)
    if too_large:
        return skip(skipped, "image_too_large", os.path.join(root, where), too_large)
    image = imdecode(data, grayscale)
    return image if image is not None else skip(skipped, "undecodable_image", os.path.join(root, where))


def under_root(path: str, skipped: Counter, where: object, line: int | None = None) -> bool:
    """Image paths in an index stay under the image root: absolute or ``..`` paths are skipped and counted, and
    so are paths holding a NUL byte, which no file name can. The log names ``where`` (``where:line`` when a
    line is given), formatted only then: this runs for every line of an index."""
    if "\0" not in path and ".." not in path and not path.startswith("/"):
        return True
    where = where if line is None else f"{where}:{line}"
    if "\0" in path:
        skip(skipped, "malformed_line", where, f"{path!r} holds a NUL byte")
        return False
    if path.startswith("/") or (".." in path and ".." in path.replace("\\", "/").split("/")):
        skip(skipped, "path_outside_root", where, repr(path))
        return False
    return True


def skip(skipped: Counter, reason: str, where: object, detail: str = "") -> None:
    """Counts a sample passed over for ``reason`` and logs where it was; None, for ``return skip(...)``."""
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
