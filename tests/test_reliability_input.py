"""Reliability: hostile and broken input through the real extract, read and convert code.

Each case records what it observed (``reliability`` fixture). The rule it checks: a corrupt sample is
skipped and counted by reason, with the file and sample in the log; a hostile or broken index or archive is
a clear error naming the file (and the member); good samples are never lost.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from crnn.data.convert import convert_split
from crnn.data.extract import UnsafeArchiveError, extract
from crnn.data.images import MAX_IMAGE_PIXELS
from crnn.data.readers import reader_for
from crnn.data.shards import LabelPolicy
from tests import layouts
from tests.layouts import HOSTILE_MEMBERS, hostile_archive, lmdb_set, tar_member, word_png

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[1]


def converted_texts(out_dir: Path) -> list[str]:
    """The ground truths in the shards, read back by the training input pipeline."""
    from crnn.config import ModelConfig
    from crnn.data.input_pipeline import make_dataset

    return [t.decode() for _, batch in make_dataset(out_dir, ModelConfig(), 16, training=False) for t in batch.numpy()]


def lost(expected: list[str], got: list[str]) -> str:
    missing = sorted((Counter(expected) - Counter(got)).elements())
    return "nothing" if not missing else f"good samples missing: {missing}"


def warned(caplog, *names: str) -> list[str]:
    """The names that no warning mentions."""
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    return [name for name in names if name not in text]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR is patched (CRC included) to declare ``width`` x ``height``."""
    data = bytearray(word_png("big"))
    data[8:33] = _png_chunk(b"IHDR", struct.pack(">II", width, height) + bytes(data[24:29]))
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid small JPEG whose start of frame is patched to declare ``width`` x ``height``."""
    image = cv2.imdecode(np.frombuffer(word_png("big"), np.uint8), cv2.IMREAD_COLOR)
    data = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def stray_bytes_before_frame(jpeg: bytes) -> bytes:
    """The JPEG with junk before its start of frame, which libjpeg passes over (so must a header check)."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof] + b"\x00junk" + jpeg[sof:]


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP (a format read by Pillow's header parser here) patched to declare ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def png_bomb(side: int) -> bytes:
    """A real grayscale PNG of ``side`` x ``side`` zeros: a few hundred KB that decode to side**2 bytes."""
    compressor, row = zlib.compressobj(9), bytes(side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def write_list(root: Path, samples: list[tuple[str, bytes, bytes]]) -> Path:
    """An SVTP-style ``gt.txt`` (``<image> <label>`` lines) with its images."""
    root.mkdir(parents=True, exist_ok=True)
    for name, image, _ in samples:
        (root / name).write_bytes(image)
    (root / "gt.txt").write_bytes(b"".join(name.encode() + b" " + label + b"\n" for name, _, label in samples))
    return root / "gt.txt"


def test_truncated_and_empty_images_are_skipped_and_counted(tmp_path, caplog, reliability):
    index, _, good, skips = layouts.mjsynth(tmp_path / "in")
    base = index.parent
    colour = cv2.imdecode(np.frombuffer(word_png("jpeg", 5), np.uint8), cv2.IMREAD_COLOR)
    bad = {"3/1/9_Cutpng_1.jpg": word_png("cut", 4)[:300], "3/2/10_Cutjpeg_2.jpg":
           cv2.imencode(".jpg", colour)[1].tobytes()[:-40], "3/3/11_Zero_3.jpg": b""}
    for name, data in bad.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    with open(index, "a") as lines:
        lines.writelines(f"./{name} 1\n" for name in bad)
    with caplog.at_level(logging.WARNING):
        manifest = convert_split("mjsynth", index, tmp_path / "out", shard_size=2)
    texts = converted_texts(tmp_path / "out")
    assert manifest["skipped"] == dict(skips + Counter(undecodable_image=len(bad)))
    assert texts == good and manifest["num_samples"] == len(good)
    assert warned(caplog, *bad) == []
    reliability("input", "truncated PNG, truncated JPEG and zero-byte images among MJSynth samples",
                f"skipped, counted by reason {manifest['skipped']}, each named in the log; "
                f"{manifest['num_samples']} good samples converted", lost(good, texts))


# The peak resident memory is VmHWM: getrusage's ru_maxrss survives fork and exec, so a child of this (large)
# test process would start at its parent's size and show no growth.
_MEASURE = """
import json, re, sys
from pathlib import Path
import cv2, numpy as np
from crnn.data.convert import convert_split

def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

index, out, bomb = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
before = peak()
manifest = convert_split("svtp", index, out)
during = peak() - before
image = cv2.imdecode(np.frombuffer(bomb.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
print(json.dumps({"manifest": manifest, "convert_growth": during, "decode_growth": peak() - before - during,
                  "decoded": list(image.shape)}))
"""


def test_images_declaring_huge_dimensions_are_refused_before_decoding(tmp_path, reliability):
    side = 16_000  # 256 M pixels: decoding allocates 256 MB in grayscale, 768 MB in colour
    bomb = png_bomb(side)
    hostile = {"png_100000.png": png_declaring(100_000, 100_000), "jpeg_60000.jpg": jpeg_declaring(60_000, 60_000),
               "jpeg_stray.jpg": stray_bytes_before_frame(jpeg_declaring(30_000, 30_000)),
               "bmp_10000.bmp": bmp_declaring(10_000, 8_000), "bomb.png": bomb}
    good = ["WYNDHAM", "HOTEL"]
    samples = [(f"{w}.png", word_png(w, i), w.encode()) for i, w in enumerate(good)]
    index = write_list(tmp_path / "in", samples[:1] + [(n, d, b"HUGE") for n, d in hostile.items()] + samples[1:])
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(index), str(tmp_path / "out"),
                             str(tmp_path / "in" / "bomb.png")], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    manifest, mib = measured["manifest"], 1 << 20
    assert manifest["skipped"] == {"image_too_large": len(hostile)} and manifest["num_samples"] == len(good)
    assert measured["decoded"] == [side, side]  # the bomb is real: OpenCV alone decodes it
    assert measured["convert_growth"] < 64 * mib < side * side <= measured["decode_growth"] + 16 * mib
    for name in hostile:
        assert name in result.stderr and "image too large" in result.stderr
    texts = converted_texts(tmp_path / "out")
    reliability("input", "images whose headers declare huge sizes (PNG 100000 x 100000, JPEG 60000 x 60000, "
                f"JPEG 30000 x 30000 behind stray bytes, BMP 10000 x 8000) and a real {len(bomb) // 1024} KB PNG "
                f"of {side} x {side} pixels",
                f"{manifest['skipped']['image_too_large']} refused from their headers before decoding "
                f"(limit {MAX_IMAGE_PIXELS} pixels), counted as image_too_large and named in the log; peak memory "
                f"grew {measured['convert_growth'] / mib:.0f} MiB converting, while decoding the PNG alone grows "
                f"it {measured['decode_growth'] / mib:.0f} MiB; {manifest['num_samples']} good samples converted",
                lost(good, texts))


def test_non_utf8_and_over_long_labels_are_counted(tmp_path, caplog, reliability):
    index, images, good, skips = layouts.ic13(tmp_path / "ic13")
    long_word = "x" * 40
    for number in (4, 5):
        (images / f"word_{number}.png").write_bytes(word_png("ab", number))
    with open(index, "ab") as gt:
        gt.write(b'word_4.png, "Caf\xe9"\r\n' + f'word_5.png, "{long_word}"\r\n'.encode())
    folder = lmdb_set(tmp_path / "lmdb", [(word_png("good", 1), b"good"), (word_png("bad", 2), b"caf\xe9"),
                                          (word_png("long", 3), long_word.encode())])
    with caplog.at_level(logging.WARNING):
        ic13 = convert_split("ic13", index, tmp_path / "out-ic13", images=images)
        lmdb = convert_split("lmdb", folder, tmp_path / "out-lmdb")
        unfiltered = convert_split("ic13", index, tmp_path / "out-full", images=images,
                                   policy=LabelPolicy(unfiltered=True))
    texts = converted_texts(tmp_path / "out-ic13") + converted_texts(tmp_path / "out-lmdb")
    assert ic13["skipped"] == dict(sorted((skips + Counter(label_not_utf8=1, label_too_long=1)).items()))
    assert lmdb["skipped"] == {"label_not_utf8": 1, "label_too_long": 1}
    assert unfiltered["skipped"] == dict(sorted((skips + Counter(label_not_utf8=1)).items()))
    assert long_word in converted_texts(tmp_path / "out-full")
    assert warned(caplog, f"{index.name}:4", f"{folder} sample 000000002") == []
    reliability("input", "labels that are not UTF-8 (latin-1 'Caf\\xe9') and labels of 40 characters (over 25), "
                "in an IC13 gt.txt and an LMDB",
                f"IC13 skipped {ic13['skipped']}, LMDB skipped {lmdb['skipped']}, the non-UTF-8 ones named by "
                f"file:line or sample in the log; the long label kept as-is only in an unfiltered split (label "
                f"policy); {ic13['num_samples'] + lmdb['num_samples']} good samples converted",
                lost(good + ["good"], texts))


def test_index_lines_with_the_wrong_number_of_fields(tmp_path, caplog, reliability):
    cases = {}
    for fmt, extra in (("svtp", b"just_one_field\n"), ("ic13", b"word_9.png\r\n"), ("mjsynth", b"71711\n"),
                       ("cute80", b"\n   \n")):
        index, images, good, skips = layouts.LAYOUTS[fmt](tmp_path / fmt)
        with open(index, "ab") as lines:
            lines.write(extra)
        number = len(index.read_bytes().splitlines())
        with caplog.at_level(logging.WARNING):
            manifest = convert_split(fmt, index, tmp_path / f"out-{fmt}", images=images)
        texts = converted_texts(tmp_path / f"out-{fmt}")
        cases[fmt] = (manifest, texts, good, f"{index}:{number}")
        assert texts == good
        expected = skips + (Counter() if fmt == "cute80" else Counter(malformed_line=1))
        assert manifest["skipped"] == dict(sorted(expected.items())), fmt
    assert warned(caplog, *(where for fmt, (*_, where) in cases.items() if fmt != "cute80")) == []
    expected_all = [word for _, _, good, _ in cases.values() for word in good]
    converted_all = [text for _, texts, _, _ in cases.values() for text in texts]
    reliability("input", "index lines with too few fields (SVTP '<image>' alone, IC13 without the comma, an "
                "MJSynth line with no <n>_<word>_<index> path) and blank lines",
                "; ".join(f"{fmt}: skipped {m['skipped']}, {m['num_samples']} good samples converted"
                          for fmt, (m, *_) in cases.items())
                + "; each malformed line counted as malformed_line and named as file:line in the log, blank "
                "lines ignored", lost(expected_all, converted_all))


def test_archives_with_path_traversal_and_links_out_are_refused(tmp_path, reliability):
    target = tmp_path / "data" / "svt"
    target.mkdir(parents=True)
    (target / "previous.txt").write_text("the last good extraction")
    refusals, tmp_evil = [], Path("/tmp/evil.txt").exists()
    for number, (suffix, kind, name) in enumerate(HOSTILE_MEMBERS):
        archive = hostile_archive(tmp_path / f"a{number}.{suffix}", kind, name)
        with pytest.raises(UnsafeArchiveError) as err:
            extract(archive, target)
        assert str(archive) in str(err.value) and repr(name.split(" -> ")[0]) in str(err.value), str(err.value)
        assert sorted(p.name for p in target.parent.iterdir()) == ["svt"]  # no temporary folder left
        assert [p.name for p in target.iterdir()] == ["previous.txt"]
        refusals.append(f"{kind} {name!r} in .{suffix}")
    assert Path("/tmp/evil.txt").exists() == tmp_evil and not list(tmp_path.rglob("evil.txt"))
    reliability("input", f"archives with members that leave the target: {', '.join(refusals)}",
                f"all {len(refusals)} refused with UnsafeArchiveError naming the archive and the member; nothing "
                "written outside the target (no evil.txt under the test folder or in /tmp); the temporary folder, "
                "with the members before the refused one, removed; the previous extraction untouched",
                "nothing" if (target / "previous.txt").read_text() == "the last good extraction"
                else "the previous extraction")


def _zeros(size: int):
    """A readable stream of ``size`` zero bytes, made as read (no huge buffer in memory)."""

    class Zeros(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    return io.BufferedReader(Zeros(), 1 << 20)


def _bomb(path: Path, size: int) -> Path:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            zf.writestr("readme.txt", b"good")
            with zf.open("bomb.bin", "w", force_zip64=True) as out, _zeros(size) as zeros:
                while chunk := zeros.read(1 << 20):
                    out.write(chunk)
        return path
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        tar_member(tar, "readme.txt", b"good")
        info = tarfile.TarInfo("bomb.bin")
        info.size = size
        tar.addfile(info, _zeros(size))
    return path


def _recording(extract_member, written: list[str]):
    """``extract_member`` (ZipFile's or TarFile's), noting each member's name in ``written`` first."""

    def recorded(self, member, *args, **kwargs):
        written.append(getattr(member, "filename", None) or getattr(member, "name", member))
        return extract_member(self, member, *args, **kwargs)

    return recorded


def test_decompression_bombs_stop_before_being_written(tmp_path, monkeypatch, reliability):
    size = 96 << 20  # over the 64 MiB the ratio leaves any archive; some 1000 times what it packs to
    written: list[str] = []
    for cls in (zipfile.ZipFile, tarfile.TarFile):
        monkeypatch.setattr(cls, "extract", _recording(cls.extract, written))
    outcomes = []
    for suffix in ("zip", "tar.gz"):
        archive = _bomb(tmp_path / f"bomb.{suffix}", size)
        written.clear()
        started = time.perf_counter()
        with pytest.raises(UnsafeArchiveError, match="decompression bomb") as err:
            extract(archive, tmp_path / "target")
        seconds = time.perf_counter() - started
        message = str(err.value)
        assert str(archive) in message and "'bomb.bin'" in message
        assert "bomb.bin" not in written and not (tmp_path / "target").exists()
        assert all(p.name.startswith("bomb.") for p in tmp_path.iterdir())  # no temporary folder left
        before = f"{written} extracted before it, then removed" if written else "nothing extracted before it"
        outcomes.append(f".{suffix} of {archive.stat().st_size // 1024} KB refused in {seconds * 1000:.0f} ms at the "
                        f"bomb's header, {before}")
    extract(archive, tmp_path / "allowed", max_ratio=10_000)  # the caller may allow more
    assert (tmp_path / "allowed" / "bomb.bin").stat().st_size == size
    reliability("input", f"decompression bombs: a .zip and a .tar.gz holding {size >> 20} MiB of zeros",
                "; ".join(outcomes) + f"; error names archive and member ({message.split(': ', 1)[1]}); the target "
                "left absent, no partial files; max_bytes / max_ratio are the caller's to raise (extracted whole "
                "with max_ratio=10000)")


def test_lmdb_with_a_wrong_num_samples(tmp_path, caplog, reliability):
    import lmdb

    index, _, good, skips = layouts.lmdb(tmp_path / "in")  # num-samples 5 for 4 written samples
    with caplog.at_level(logging.WARNING):
        manifest = convert_split("lmdb", index, tmp_path / "out")
    texts = converted_texts(tmp_path / "out")
    assert manifest["skipped"] == dict(sorted(skips.items())) and texts == good
    huge = lmdb_set(tmp_path / "huge", [(word_png("public", 1), b"public")], num_samples=10**12)
    started = time.perf_counter()
    huge_manifest = convert_split("lmdb", huge, tmp_path / "out-huge")
    huge_seconds = time.perf_counter() - started
    assert huge_manifest["num_samples"] == 1 and huge_manifest["skipped"] == {"missing_key": 10**12 - 1}
    errors = {}
    for raw in (b"12abc", b"", b"-3", b"\xff\xfe", b"1e3"):
        folder = tmp_path / f"bad{len(errors)}"
        lmdb_set(folder, [(word_png("x", 1), b"x")])
        env = lmdb.open(str(folder))
        with env.begin(write=True) as txn:
            txn.put(b"num-samples", raw)
        env.close()
        with pytest.raises(ValueError, match="'num-samples' is") as err:
            convert_split("lmdb", folder, tmp_path / f"out-bad{len(errors)}")
        assert str(folder) in str(err.value)
        errors[raw] = str(err.value).split(": ", 1)[1]
    reliability("input", "LMDB whose num-samples is larger than its samples (5 for 4; 10^12 for 1) or not a "
                f"count ({', '.join(repr(r) for r in errors)})",
                f"larger: the absent samples counted as missing_key ({manifest['skipped']}; for 10^12 "
                f"{huge_manifest['skipped']['missing_key']} counted in {huge_seconds:.2f} s without listing "
                f"them), {manifest['num_samples']} + {huge_manifest['num_samples']} good samples converted; not a "
                f"count: ValueError naming the folder, e.g. {next(iter(errors.values()))!r}",
                lost(good, texts))


def test_mat_files_of_the_wrong_structure(tmp_path, caplog, reliability):
    folder = tmp_path / "IIIT5K"
    folder.mkdir()
    messages = {}
    broken = {"no GroundTruth field": {"testdata": np.zeros((1, 2), dtype=[("ImgName", object)])},
              "no struct array": {"something": np.zeros(3)},
              "numbers instead of a struct": {"testdata": np.zeros((1, 3))}}
    for what, content in broken.items():
        scipy.io.savemat(folder / "testdata.mat", content)
        with pytest.raises(ValueError) as err:
            convert_split("iiit5k", folder / "testdata.mat", tmp_path / "out")
        assert str(folder / "testdata.mat") in str(err.value)
        messages[what] = str(err.value).split(": ", 1)[1]
    (folder / "testdata.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(100))
    with pytest.raises(ValueError, match="testdata.mat: not a readable MATLAB file") as err:
        convert_split("iiit5k", folder / "testdata.mat", tmp_path / "out")
    messages["not a MATLAB file"] = str(err.value).split(": ", 1)[1]
    assert "GroundTruth" in messages["no GroundTruth field"] and "ImgName" in messages["numbers instead of a struct"]
    records = np.zeros((1, 3), dtype=[("ImgName", object), ("GroundTruth", object)])
    records[0] = [("test/1_1.png", "PRIVATE"), ("test/2_1.png", np.zeros(2)), ("test/3_1.png", "PARKING")]
    for number in (1, 2, 3):
        (folder / "test").mkdir(exist_ok=True)
        (folder / f"test/{number}_1.png").write_bytes(word_png("word", number))
    scipy.io.savemat(folder / "testdata.mat", {"testdata": records})
    with caplog.at_level(logging.WARNING):
        manifest = convert_split("iiit5k", folder / "testdata.mat", tmp_path / "out")
    texts = converted_texts(tmp_path / "out")
    assert manifest["skipped"] == {"malformed_entry": 1} and warned(caplog, "testdata.mat testdata[1]") == []
    reliability("input", "IIIT5K .mat files of the wrong structure: " + ", ".join(broken) + ", not a MATLAB "
                "file, a record whose GroundTruth is numbers",
                "a clear ValueError naming the file and what is missing: " + "; ".join(messages.values())
                + f"; the bad record counted as malformed_entry ({manifest['skipped']}) and named in the log, "
                f"{manifest['num_samples']} good samples converted", lost(["PRIVATE", "PARKING"], texts))


XXE = '<?xml version="1.0"?><!DOCTYPE tagset [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE tagset [<!ENTITY a "lollollollollollollollollollol">'
          + "".join(f'<!ENTITY {chr(98 + i)} "{f"&{chr(97 + i)};" * 10}">' for i in range(9)) + "]>")


def _svt_with(prolog: str, name: str) -> str:
    return (f"{prolog}<tagset><image><imageName>img/00_01.jpg</imageName><taggedRectangles>"
            f'<taggedRectangle height="60" width="140" x="5" y="15"><tag>{name}</tag></taggedRectangle>'
            "</taggedRectangles></image></tagset>")


def test_xml_entities_are_refused_never_expanded(tmp_path, caplog, reliability):
    secret = next(line for line in Path("/etc/passwd").read_text().splitlines() if line.strip())
    layouts.svt(tmp_path / "in")
    xml = tmp_path / "in" / "svt1" / "test.xml"
    documents = {
        "XXE (external entity file:///etc/passwd)": _svt_with(XXE, "&x;"),
        "parameter-entity XXE": _svt_with('<?xml version="1.0"?><!DOCTYPE tagset [<!ENTITY % p SYSTEM '
                                          '"file:///etc/passwd"> %p;]>', "WORD"),
        "billion laughs (10^10 expansions)": _svt_with(LAUGHS, "&j;"),
        "IC03 word.xml with XXE": f'{XXE}<imagelist><image file="word/1/1.jpg" tag="&x;" /></imagelist>',
    }
    messages, seconds = [], 0.0
    with caplog.at_level(logging.DEBUG):
        for number, (what, document) in enumerate(documents.items()):
            fmt, index = ("ic03", tmp_path / "in" / "word.xml") if what.startswith("IC03") else ("svt", xml)
            index.write_text(document)
            started = time.perf_counter()
            with pytest.raises(ValueError, match="refused: it declares the XML entity") as err:
                convert_split(fmt, index, tmp_path / f"out{number}")
            seconds = max(seconds, time.perf_counter() - started)
            assert str(index) in str(err.value)
            messages.append(str(err.value).split(": ", 1)[1])
        # An external DTD is not fetched either: the document converts without it.
        xml.write_text(_svt_with('<?xml version="1.0"?><!DOCTYPE tagset SYSTEM "file:///etc/passwd">', "LIVING"))
        manifest = convert_split("svt", xml, tmp_path / "out-dtd")
        texts = converted_texts(tmp_path / "out-dtd")
        xml.write_bytes(_svt_with('<?xml version="1.0" encoding="utf-8"?>', "CAF\xc9").encode("latin-1"))
        with pytest.raises(ValueError, match="test.xml: not a usable XML index: not well-formed") as bad:
            convert_split("svt", xml, tmp_path / "out-latin1")
    assert texts == ["LIVING"]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # inputs, shards, manifests
    seen = [secret in text for text in (caplog.text, *messages, str(bad.value))]
    seen += [secret.encode() in p.read_bytes() for p in files]
    assert not any(seen)
    latin1 = str(bad.value).split(": ", 1)[1]
    reliability("input", "XML indexes declaring entities: " + ", ".join(documents) + "; an external DTD; "
                "a latin-1 byte in a UTF-8 document",
                f"all {len(documents)} refused in at most {seconds * 1000:.0f} ms, unexpanded, with a ValueError "
                f"naming the file (e.g. {messages[0]!r}); the external DTD is not fetched "
                f"({manifest['num_samples']} sample converted without it); the latin-1 one: {latin1!r}; the first "
                f"line of /etc/passwd found in {sum(seen)} of {len(seen)} places searched (the log, the errors, "
                "every file written)")


def test_xml_boxes_outside_the_image_are_clipped_or_counted(tmp_path, caplog, reliability):
    index, _, good, skips = layouts.svt(tmp_path / "in")  # a 300 x 120 scene; LIVING at x=-5, ROOM past the right
    rects = {"NEG": (-40, -30, 100, 70), "EDGE": (250, 80, 200, 90), "AWAY": (400, 10, 50, 20),
             "LEFT": (-100, 10, 50, 20), "SLIVER": (299, 10, 40, 20), "FLAT": (10, 10, 50, 0),
             "BACK": (60, 10, -30, 20), "ZERO": (0, 0, 0, 0)}
    extra = "".join(f'<taggedRectangle height="{h}" width="{w}" x="{x}" y="{y}"><tag>{tag}</tag></taggedRectangle>'
                    for tag, (x, y, w, h) in rects.items())
    index.write_text(index.read_text().replace("</taggedRectangles>", extra + "</taggedRectangles>", 1))
    with caplog.at_level(logging.WARNING):
        manifest = convert_split("svt", index, tmp_path / "out")
    shapes = {s.label: s.image.shape[:2] for s in reader_for("svt")(index, Counter())}
    texts = converted_texts(tmp_path / "out")
    assert shapes["NEG"] == (40, 60) and shapes["EDGE"] == (40, 50)  # clamped to the 300 x 120 scene
    assert texts == good + ["NEG", "EDGE"]
    expected = skips + Counter(box_outside_image=3, malformed_box=3)
    assert manifest["skipped"] == dict(sorted(expected.items()))
    assert warned(caplog, *(f"img/00_01.jpg#{i}" for i in range(4, 10))) == []
    reliability("input", "SVT word boxes with negative origins, past the edges, wholly outside, a 1-pixel "
                "sliver inside, zero width or height and negative width",
                f"boxes partly inside clipped to the image and converted (e.g. {rects['NEG']} -> "
                f"{shapes['NEG'][1]} x {shapes['NEG'][0]}); skipped {manifest['skipped']}: under 2 x 2 pixels "
                "inside -> box_outside_image, width or height not positive -> malformed_box, each named in the "
                f"log; {manifest['num_samples']} good samples converted", lost(good, texts))
