"""One reader per dataset format. Each yields ``Sample``s and counts what it skips, by reason.

A reader starts from the file the format is indexed by (an annotation list, a ``.mat``, an ``.xml``, a
``gt.txt``, an LMDB folder); image paths in it are relative to ``images`` (by default that file's folder).
A missing or undecodable image, a non-UTF-8 label, a missing LMDB key or a malformed line is counted in
``skipped`` and passed over: never fatal, never silent. A file that is not of its format at all is an error.
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


Reader = Callable[..., Iterator[Sample]]  # (index, skipped, images=None) -> samples


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
    except OSError as err:
        skipped["unreadable_image"] += samples
        log.warning("skipped %d sample(s) of %s: %s", samples, path, err)
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


def read_mjsynth(annotation: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """``annotation_*.txt`` lines ``./3000/7/182_slinking_71711.jpg 71711``; the label is in the file name."""
    root = images or annotation.parent
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


def read_iiit5k(mat_file: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """``testdata.mat`` or ``traindata.mat``: a 1 x N struct array with ``ImgName`` and ``GroundTruth``."""
    import scipy.io

    try:
        data = scipy.io.loadmat(mat_file, squeeze_me=True, struct_as_record=True)
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"{mat_file}: not a readable MATLAB file: {err}") from err
    key = next((k for k in ("testdata", "traindata") if k in data), None)
    if key is None:
        raise ValueError(f"{mat_file}: no 'testdata' or 'traindata' struct array")
    records = np.atleast_1d(data[key])
    missing = {"ImgName", "GroundTruth"} - set(records.dtype.names or ())
    if missing:
        raise ValueError(f"{mat_file}: struct array lacks field(s) {', '.join(sorted(missing))}")
    for record in records:
        name, label = str(record["ImgName"]), str(record["GroundTruth"])
        image = _load((images or mat_file.parent) / name, skipped)
        if image is not None:
            yield Sample(image, label, name)


def read_svt(xml_file: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """``test.xml``: word boxes on scene images; each box is cropped, clamped to the image."""
    from defusedxml import ElementTree

    tree = ElementTree.parse(xml_file)
    for image_node in tree.getroot().iter("image"):
        name = (image_node.findtext("imageName") or "").strip()
        rects = list(image_node.iter("taggedRectangle"))
        scene = _load((images or xml_file.parent) / name, skipped, samples=len(rects))
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


def read_ic13(gt_file: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
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
        image = _load((images or gt_file.parent) / name.strip(), skipped)
        if image is not None:
            yield Sample(image, label, name.strip())


def read_ic03(xml_file: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """ICDAR 2003 ``word.xml``: ``<image file="word/1/1.jpg" tag="311" />``."""
    from defusedxml import ElementTree

    for index, node in enumerate(ElementTree.parse(xml_file).getroot().iter("image")):
        name, label = node.get("file"), node.get("tag")
        if not name or label is None:
            skipped["malformed_entry"] += 1
            log.warning("skipped %s: image entry %d lacks file= or tag=", xml_file, index)
            continue
        image = _load((images or xml_file.parent) / name, skipped)
        if image is not None:
            yield Sample(image, label, name)


def read_image_label_list(list_file: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """SVTP ``13_15_0_par.jpg WYNDHAM`` and CUTE80 ``timage/001.jpg RONALDO ...`` lines: image, label, rest."""
    for number, line in _text_lines(list_file, skipped):
        parts = line.split()
        if len(parts) < 2:
            skipped["malformed_line"] += 1
            log.warning("skipped %s:%d: expected '<image> <label>', got %r", list_file, number, line)
            continue
        image = _load((images or list_file.parent) / parts[0], skipped)
        if image is not None:
            yield Sample(image, parts[1], parts[0])


def read_lmdb(folder: Path, skipped: Counter, images: Path | None = None) -> Iterator[Sample]:
    """The clovaai LMDB layout: ``num-samples``, ``image-%09d`` and ``label-%09d`` from 1, opened read-only."""
    import lmdb

    if not (Path(folder) / "data.mdb").is_file():
        raise FileNotFoundError(f"{folder}: no data.mdb; is this an LMDB dataset folder?")
    env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    try:
        with env.begin() as txn:
            raw = txn.get(b"num-samples")
            try:
                count = int(raw.decode())
            except (AttributeError, UnicodeDecodeError, ValueError):
                raise ValueError(f"{folder}: 'num-samples' is {raw!r}, not a count") from None
            for index in range(1, count + 1):
                source_id = f"{index:09d}"
                image_bytes, label_bytes = txn.get(b"image-" + source_id.encode()), txn.get(
                    b"label-" + source_id.encode())
                if image_bytes is None or label_bytes is None:
                    skipped["missing_key"] += 1
                    log.warning("skipped %s sample %s: no %s key", folder, source_id,
                                "image" if image_bytes is None else "label")
                    continue
                try:
                    label = label_bytes.decode("utf-8")
                except UnicodeDecodeError:
                    skipped["label_not_utf8"] += 1
                    log.warning("skipped %s sample %s: label is not UTF-8", folder, source_id)
                    continue
                image = decode_image(image_bytes)
                if image is None:
                    skipped["undecodable_image"] += 1
                    log.warning("skipped %s sample %s: not a decodable image", folder, source_id)
                    continue
                yield Sample(image, label, source_id)
    finally:
        env.close()


READERS: dict[str, Reader] = {
    "mjsynth": read_mjsynth,
    "iiit5k": read_iiit5k,
    "svt": read_svt,
    "ic03": read_ic03,
    "ic13": read_ic13,
    "ic15": read_ic13,  # the same gt.txt form; IC15's files often start with a BOM, which _text_lines drops
    "svtp": read_image_label_list,
    "cute80": read_image_label_list,
    "lmdb": read_lmdb,
}

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


def find_index(fmt: str, root: Path) -> Path:
    """The index a reader of ``fmt`` starts from: ``root`` itself if a file, else found inside it."""
    root = Path(root)
    reader_for(fmt)
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


def reader_for(fmt: str) -> Reader:
    try:
        return READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(READERS)}") from None
