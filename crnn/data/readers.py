"""One reader per dataset format. Each yields ``Sample``s and counts what it skips, by reason.

A reader starts from the file the format is indexed by (an annotation list, a ``.mat``, an ``.xml``, a
``gt.txt``); image paths in it are relative to that file's folder. A missing or undecodable image, a
non-UTF-8 label or a malformed line is counted in ``skipped`` and passed over: never fatal, never silent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """A decoded word image (H x W x 3, BGR, uint8), its ground truth as written, and where it came from."""

    image: np.ndarray
    label: str
    source_id: str


Reader = Callable[[Path, Counter], Iterator[Sample]]


def decode_image(data: bytes) -> np.ndarray | None:
    """BGR image, or None when the bytes do not decode to a non-empty image."""
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return image


def _load(path: Path, skipped: Counter, samples: int = 1) -> np.ndarray | None:
    """The decoded image, or None with ``samples`` (the words it holds) counted under the reason."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        skipped["missing_image"] += samples
        log.warning("skipped %d sample(s) of %s: file not found", samples, path)
        return None
    image = decode_image(data)
    if image is None:
        skipped["undecodable_image"] += samples
        log.warning("skipped %d sample(s) of %s: not a decodable image", samples, path)
    return image


def _text_lines(path: Path, skipped: Counter) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, a UTF-8 BOM removed; non-UTF-8 lines are counted and skipped."""
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            skipped["label_not_utf8"] += 1
            log.warning("skipped %s:%d: not UTF-8", path, number)
            continue
        if line:
            yield number, line


def read_mjsynth(annotation: Path, skipped: Counter) -> Iterator[Sample]:
    """``annotation_*.txt`` lines ``./3000/7/182_slinking_71711.jpg 71711``; the label is in the file name."""
    root = annotation.parent
    for number, line in _text_lines(annotation, skipped):
        rel = line.split(" ")[0]
        parts = Path(rel).stem.split("_")
        if len(parts) < 3 or not parts[1]:
            skipped["malformed_line"] += 1
            log.warning("skipped %s:%d: %r does not name <n>_<word>_<index>", annotation, number, rel)
            continue
        image = _load(root / rel, skipped)
        if image is not None:
            yield Sample(image, parts[1], rel)


def read_iiit5k(mat_file: Path, skipped: Counter) -> Iterator[Sample]:
    """``testdata.mat`` or ``traindata.mat``: a 1 x N struct array with ``ImgName`` and ``GroundTruth``."""
    import scipy.io

    data = scipy.io.loadmat(mat_file, squeeze_me=True, struct_as_record=True)
    key = next((k for k in ("testdata", "traindata") if k in data), None)
    if key is None:
        raise ValueError(f"{mat_file}: no 'testdata' or 'traindata' struct array")
    records = np.atleast_1d(data[key])
    missing = {"ImgName", "GroundTruth"} - set(records.dtype.names or ())
    if missing:
        raise ValueError(f"{mat_file}: struct array lacks field(s) {', '.join(sorted(missing))}")
    for record in records:
        name, label = str(record["ImgName"]), str(record["GroundTruth"])
        image = _load(mat_file.parent / name, skipped)
        if image is not None:
            yield Sample(image, label, name)


def read_svt(xml_file: Path, skipped: Counter) -> Iterator[Sample]:
    """``test.xml``: word boxes on scene images; each box is cropped, clamped to the image."""
    from defusedxml import ElementTree

    tree = ElementTree.parse(xml_file)
    for image_node in tree.getroot().iter("image"):
        name = (image_node.findtext("imageName") or "").strip()
        rects = list(image_node.iter("taggedRectangle"))
        scene = _load(xml_file.parent / name, skipped, samples=len(rects))
        if scene is None:
            continue
        height, width = scene.shape[:2]
        for index, rect in enumerate(rects):
            try:
                x, y = int(rect.get("x")), int(rect.get("y"))
                w, h = int(rect.get("width")), int(rect.get("height"))
            except (TypeError, ValueError):
                skipped["malformed_box"] += 1
                log.warning("skipped %s: box %d of %s has no integer x, y, width, height", xml_file, index, name)
                continue
            x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
            if x1 - x0 < 2 or y1 - y0 < 2:
                skipped["box_outside_image"] += 1
                continue
            label = (rect.findtext("tag") or "").strip()
            yield Sample(scene[y0:y1, x0:x1].copy(), label, f"{name}#{index}")


def read_ic13(gt_file: Path, skipped: Counter) -> Iterator[Sample]:
    """ICDAR 2013/2015 task 3 ``gt.txt``: ``word_1.png, "Tiredness"`` (quoted, may start with a BOM)."""
    for number, line in _text_lines(gt_file, skipped):
        name, sep, label = line.partition(",")
        if not sep:
            skipped["malformed_line"] += 1
            log.warning("skipped %s:%d: no comma in %r", gt_file, number, line)
            continue
        label = label.strip()
        if len(label) >= 2 and label[0] == label[-1] == '"':
            label = label[1:-1].replace('\\"', '"')
        image = _load(gt_file.parent / name.strip(), skipped)
        if image is not None:
            yield Sample(image, label, name.strip())


READERS: dict[str, Reader] = {
    "mjsynth": read_mjsynth,
    "iiit5k": read_iiit5k,
    "svt": read_svt,
    "ic13": read_ic13,
}


def reader_for(fmt: str) -> Reader:
    try:
        return READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(READERS)}") from None
