"""The ``synthetic`` source: rendered datasets packed in the on-disk layouts and archives of the real ones.

Nothing can be downloaded here, so the pipeline's default source makes its own data, and then takes it through
the same fetch, verify and extract path that a real URL takes. Each dataset is written as the real one ships:

- ``mjsynth``: ``mnt/ramdisk/max/90kDICT32px/<d>/<d>/<n>_<Word>_<lexidx>.jpg`` with ``annotation_train.txt``,
  ``annotation_val.txt`` and ``lexicon.txt`` (a ``.tar.gz``);
- ``IIIT5K``: ``IIIT5K/testdata.mat`` (a 1 x N struct array) and ``IIIT5K/test/*.png`` (a ``.tar.gz``);
- ``SVT``: ``svt1/test.xml`` with word boxes on larger scene images under ``svt1/img/`` (a ``.zip``);
- ``IC13``: ``Challenge2_Test_Task3_Images/word_N.png`` with ``gt.txt`` (a ``.zip``).

Archives are byte-identical for a given seed (fixed member order, times and owners).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np
import scipy.io

from crnn.data.catalog import DatasetEntry, RemoteFile, Split
from crnn.data.render import random_style, random_word, render_word
from crnn.files import atomic_path, sha256_of


@dataclass(frozen=True)
class SyntheticSpec:
    """How much to render. ``seed`` fixes every byte of every archive."""

    seed: int = 0
    train_size: int = 40_000
    val_size: int = 500
    test_size: int = 300


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _word_image(seed: int, stream: int, index: int) -> tuple[str, np.ndarray]:
    rng = _rng(seed, stream, index)
    word = random_word(rng)
    return word, render_word(word, rng)


def _encode(image: np.ndarray, ext: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode an image as {ext}")
    return buf.tobytes()


Members = dict[str, bytes]


def mjsynth_members(spec: SyntheticSpec) -> Members:
    root = "mnt/ramdisk/max/90kDICT32px"
    members: Members = {}
    lexicon: dict[str, int] = {}
    # Splits live in separate top folders, as in the real release.
    for split, stream, size, top in (("train", 1, spec.train_size, 1), ("val", 2, spec.val_size, 1001)):
        lines = []
        for i in range(size):
            word, image = _word_image(spec.seed, stream, i)
            # MJSynth images are 32 pixels high.
            image = cv2.resize(image, (max(8, round(image.shape[1] * 32 / image.shape[0])), 32))
            lex_index = lexicon.setdefault(word.lower(), len(lexicon))
            rel = f"./{i // 1000 + top}/{i % 7 + 1}/{i}_{word}_{lex_index}.jpg"
            members[f"{root}/{rel[2:]}"] = _encode(image, ".jpg")
            lines.append(f"{rel} {lex_index}\n")
        members[f"{root}/annotation_{split}.txt"] = "".join(lines).encode()
    members[f"{root}/lexicon.txt"] = "".join(f"{w}\n" for w in lexicon).encode()
    return members


def iiit5k_members(spec: SyntheticSpec) -> Members:
    members: Members = {}
    records = np.zeros((1, spec.test_size), dtype=[("ImgName", object), ("GroundTruth", object),
                                                   ("smallLexi", object), ("mediumLexi", object)])
    for i in range(spec.test_size):
        word, image = _word_image(spec.seed, 3, i)
        name = f"test/{1000 + i}_{i % 9 + 1}.png"
        members[f"IIIT5K/{name}"] = _encode(image, ".png")
        lexicon = np.array([word, random_word(_rng(spec.seed, 30, i))], dtype=object)
        records[0, i] = (name, word, lexicon, lexicon)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"testdata": records})
    members["IIIT5K/testdata.mat"] = _fixed_mat_header(buffer.getvalue())
    return members


def _fixed_mat_header(data: bytes) -> bytes:
    """savemat writes the clock time into the file's 116-byte text header: a fixed one keeps the same seed's
    archive byte-identical whenever it is made."""
    text = b"MATLAB 5.0 MAT-file, written by crnn.data.synthetic"
    return text.ljust(116, b" ") + data[116:]


def svt_members(spec: SyntheticSpec) -> Members:
    """Scene images of 3-5 words each; boxes near an edge may run past it, as some real SVT boxes do."""
    members: Members = {}
    xml = ["<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<tagset>\n"]
    words_done, scene = 0, 0
    while words_done < spec.test_size:
        rng = _rng(spec.seed, 4, scene)
        height, width = 480, 640
        surface = tuple(int(c) for c in rng.integers(0, 256, size=3))
        image = np.empty((height, width, 3), np.uint8)
        image[:] = surface[::-1]  # RGB -> BGR
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        rects = []
        for slot in range(min(int(rng.integers(3, 6)), spec.test_size - words_done)):
            word = random_word(rng)
            # Words are painted on the scene's surface, so a loose box shows more of the same surface.
            crop = render_word(word, rng, random_style(rng, background=surface))
            crop = crop[:, : width - 20]
            band_top = slot * (height // 5)
            y = int(rng.integers(band_top, band_top + max(1, height // 5 - crop.shape[0])))
            y = min(y, height - crop.shape[0])
            x = int(rng.integers(0, width - crop.shape[1] + 1))
            image[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
            # Annotators' boxes are loose: pad, letting a box overrun the image border.
            pad = int(rng.integers(0, 6))
            rects.append((word, x - pad, y - pad, crop.shape[1] + 2 * pad, crop.shape[0] + 2 * pad))
        name = f"img/{scene // 10:02d}_{scene % 10:02d}.jpg"
        members[f"svt1/{name}"] = _encode(image, ".jpg")
        xml.append(f"  <image>\n    <imageName>{name}</imageName>\n    <address>synthetic</address>\n"
                   f"    <lex>{escape(','.join(r[0].upper() for r in rects))}</lex>\n"
                   f"    <Resolution x=\"{width}\" y=\"{height}\"/>\n    <taggedRectangles>\n")
        for word, x, y, w, h in rects:
            xml.append(f"      <taggedRectangle height=\"{h}\" width=\"{w}\" x=\"{x}\" y=\"{y}\">\n"
                       f"        <tag>{escape(word.upper())}</tag>\n      </taggedRectangle>\n")
        xml.append("    </taggedRectangles>\n  </image>\n")
        words_done += len(rects)
        scene += 1
    xml.append("</tagset>\n")
    members["svt1/test.xml"] = "".join(xml).encode()
    return members


def ic13_members(spec: SyntheticSpec) -> Members:
    folder = "Challenge2_Test_Task3_Images"
    members: Members = {}
    lines = []
    for i in range(spec.test_size):
        word, image = _word_image(spec.seed, 5, i)
        members[f"{folder}/word_{i + 1}.png"] = _encode(image, ".png")
        lines.append(f'word_{i + 1}.png, "{word}"\r\n')
    members[f"{folder}/gt.txt"] = "".join(lines).encode("utf-8")
    return members


def write_tar_gz(members: Members, dest: Path) -> None:
    """A reproducible ``.tar.gz``: sorted members, zero times, root ownership."""
    with (atomic_path(dest) as tmp, open(tmp, "wb") as raw,
          gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
          tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar):
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(members[name]))


def write_zip(members: Members, dest: Path) -> None:
    """A reproducible ``.zip``: sorted members, a fixed date."""
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), members[name])


@dataclass(frozen=True)
class _Layout:
    name: str
    format: str
    role: str
    file: str
    splits: dict[str, str]  # split -> the file its reader starts from, inside the archive
    members: Callable[[SyntheticSpec], Members]
    pack: Callable[[Members, Path], None]


_MJ = "mnt/ramdisk/max/90kDICT32px"
LAYOUTS = (
    _Layout("mjsynth", "mjsynth", "train", "mjsynth.tar.gz",
            {"train": f"{_MJ}/annotation_train.txt", "val": f"{_MJ}/annotation_val.txt"},
            mjsynth_members, write_tar_gz),
    _Layout("IIIT5K", "iiit5k", "benchmark", "IIIT5K-Word_V3.0.tar.gz", {"test": "IIIT5K/testdata.mat"},
            iiit5k_members, write_tar_gz),
    _Layout("SVT", "svt", "benchmark", "svt.zip", {"test": "svt1/test.xml"}, svt_members, write_zip),
    _Layout("IC13", "ic13", "benchmark", "Challenge2_Test_Task3_Images.zip",
            {"test": "Challenge2_Test_Task3_Images/gt.txt"}, ic13_members, write_zip),
)


def build_mirror(spec: SyntheticSpec, mirror: Path) -> list[DatasetEntry]:
    """Renders every dataset and packs it into ``mirror``; returns catalog entries that point there."""
    mirror.mkdir(parents=True, exist_ok=True)
    entries = []
    for layout in LAYOUTS:
        dest = mirror / layout.file
        layout.pack(layout.members(spec), dest)
        file = RemoteFile(layout.file, dest.resolve().as_uri(), sha256=sha256_of(dest))
        entries.append(DatasetEntry(layout.name, layout.format, layout.role, (file,),
                                    {split: Split(index) for split, index in layout.splits.items()},
                                    description=f"synthetic {layout.name}, seed {spec.seed}"))
    return entries
