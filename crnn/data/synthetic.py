"""The ``synthetic`` source: rendered datasets packed in the on-disk layouts and archives of the real ones.

Nothing can be downloaded here, so the pipeline's default source makes its own data, and then takes it through
the same fetch, verify and extract path that a real URL takes. Each dataset is written as the real one ships:

- ``mjsynth``: ``mnt/ramdisk/max/90kDICT32px/<d>/<d>/<n>_<Word>_<lexidx>.jpg`` with ``annotation_train.txt``,
  ``annotation_val.txt`` and ``lexicon.txt`` (a ``.tar.gz``);
- ``IIIT5K``: ``IIIT5K/testdata.mat`` (a 1 x N struct array) and ``IIIT5K/test/*.png`` (a ``.tar.gz``);
- ``SVT``: ``svt1/test.xml`` with word boxes on larger scene images under ``svt1/img/`` (a ``.zip``);
- ``IC13``: ``Challenge2_Test_Task3_Images/word_N.png`` with ``gt.txt`` (a ``.zip``);
- ``HeldOut``: IC13's layout, drawn from the engine's held-out split: fonts, surfaces and words that none of
  the others use, so that its score measures generalisation, not recall of a renderer.

The images come from :mod:`crnn.data.synth`, rendered on every core. Archives are byte-identical for a given
seed (fixed member order, times and owners).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np
import scipy.io

from crnn.data.catalog import DatasetEntry, RemoteFile, Split
from crnn.data.splits import HELDOUT_BENCHMARK
from crnn.data.synth import textures, words
from crnn.data.synth.render import compose, draw_word, drawn_family, finish, text_layers
from crnn.data.synth.splits import HELDOUT, TRAIN
from crnn.files import atomic_path, sha256_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticSpec:
    """How much to render. ``seed`` fixes every byte of every archive."""

    seed: int = 0
    # Enough that the quick preset's steps see each image about three times: with fewer, it learns the images
    # rather than the fonts (docs/performance.md, the held-out benchmark).
    train_size: int = 100_000
    val_size: int = 500
    test_size: int = 1000  # a benchmark's accuracy is then known to about 1.3 points (one standard error)


HELDOUT_STREAM = 6  # the random stream HeldOut's images are drawn from (each benchmark has its own)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def heldout_faces(seed: int, size: int) -> list[tuple[str, str]]:
    """The word and the font family of each of the first ``size`` HeldOut images of ``seed``, in order, drawn
    as their images are but without rendering them."""
    return [drawn_family(HELDOUT, _rng(seed, HELDOUT_STREAM, index)) for index in range(size)]


def _word_image(seed: int, stream: int, split: str, bend: bool, index: int) -> tuple[str, np.ndarray]:
    return draw_word(split, _rng(seed, stream, index), bend)


_PARALLEL_FROM = 2000  # fewer images than this render in the calling process: starting workers costs more


@contextmanager
def _renderer(size: int) -> Iterator[Callable]:
    """A ``map`` over word indices: a pool of one process per core for large sets (each image depends only on
    its (seed, stream, index), so the order of work changes no byte)."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if size < _PARALLEL_FROM or workers < 2 or not _spawnable():
        yield map
        return
    import multiprocessing

    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    except OSError as err:  # no shared memory for the pool's locks (a container without /dev/shm)
        log.warning("rendering in one process: cannot start worker processes here (%s)", err)
        yield map
        return
    with pool:
        yield partial(pool.map, chunksize=256)


def _spawnable() -> bool:
    """Whether spawned workers can start here: they re-run the main module, which a script read from standard
    input does not have. Spawned, not forked: the caller may hold threads (TensorFlow's, a tracking client's)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is None or Path(main).is_file()


def _word_images(seed: int, stream: int, size: int, split: str = TRAIN,
                 bend: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    with _renderer(size) as render:
        yield from render(partial(_word_image, seed, stream, split, bend), range(size))


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
    # Only the training images have their strokes bent: validation, like the benchmarks, shows the faces as
    # they are.
    for split, stream, size, top in (("train", 1, spec.train_size, 1), ("val", 2, spec.val_size, 1001)):
        lines = []
        for i, (word, image) in enumerate(_word_images(spec.seed, stream, size, bend=split == "train")):
            # MJSynth images are 32 pixels high.
            image = cv2.resize(image, (max(8, round(image.shape[1] * 32 / image.shape[0])), 32))
            # The release's words are letters and digits: its file names hold them. An image of "$4.99" is
            # named "499", which is also what the evaluation protocol reads it as.
            word = "".join(c for c in word if c.isascii() and c.isalnum())
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
    for i, (word, image) in enumerate(_word_images(spec.seed, 3, spec.test_size)):
        name = f"test/{1000 + i}_{i % 9 + 1}.png"
        members[f"IIIT5K/{name}"] = _encode(image, ".png")
        lexicon = np.array([word, words.draw(TRAIN, _rng(spec.seed, 30, i))], dtype=object)
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
    words_done, scene_index = 0, 0
    while words_done < spec.test_size:
        rng = _rng(spec.seed, 4, scene_index)
        height, width = 480, 640
        scene = textures.surface(TRAIN, height, width, textures.colour(TRAIN, rng), rng)
        rects = []
        for slot in range(min(int(rng.integers(3, 6)), spec.test_size - words_done)):
            word = words.draw(TRAIN, rng)
            # Words are painted on the scene's surface, so a loose box shows more of the same surface.
            layers = text_layers(word, rng)[:, : width - 20]
            h, w = layers.shape[:2]
            band_top = slot * (height // 5)
            y = min(int(rng.integers(band_top, band_top + max(1, height // 5 - h))), height - h)
            x = int(rng.integers(0, width - w + 1))
            scene[y : y + h, x : x + w] = compose(layers, scene[y : y + h, x : x + w], rng)
            # Annotators' boxes are loose: pad, letting a box overrun the image border.
            pad = int(rng.integers(0, 6))
            rects.append((word, x - pad, y - pad, w + 2 * pad, h + 2 * pad))
        name = f"img/{scene_index // 10:02d}_{scene_index % 10:02d}.jpg"
        members[f"svt1/{name}"] = _encode(finish(scene, rng), ".jpg")
        xml.append(f"  <image>\n    <imageName>{name}</imageName>\n    <address>synthetic</address>\n"
                   f"    <lex>{escape(','.join(r[0].upper() for r in rects))}</lex>\n"
                   f"    <Resolution x=\"{width}\" y=\"{height}\"/>\n    <taggedRectangles>\n")
        for word, x, y, w, h in rects:
            xml.append(f"      <taggedRectangle height=\"{h}\" width=\"{w}\" x=\"{x}\" y=\"{y}\">\n"
                       f"        <tag>{escape(word.upper())}</tag>\n      </taggedRectangle>\n")
        xml.append("    </taggedRectangles>\n  </image>\n")
        words_done += len(rects)
        scene_index += 1
    xml.append("</tagset>\n")
    members["svt1/test.xml"] = "".join(xml).encode()
    return members


def ic13_members(spec: SyntheticSpec, folder: str = "Challenge2_Test_Task3_Images", stream: int = 5,
                 split: str = TRAIN) -> Members:
    members: Members = {}
    lines = []
    for i, (word, image) in enumerate(_word_images(spec.seed, stream, spec.test_size, split)):
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
    _Layout(HELDOUT_BENCHMARK, "ic13", "benchmark", "heldout.zip", {"test": f"{HELDOUT_BENCHMARK}/gt.txt"},
            partial(ic13_members, folder=HELDOUT_BENCHMARK, stream=HELDOUT_STREAM, split=HELDOUT), write_zip),
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
