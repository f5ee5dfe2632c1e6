"""Small fixtures in each dataset's real on-disk layout, each with known bad samples.

Every builder returns (index path, images folder or None, expected good labels, expected skips by reason).
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from crnn.data.synth.render import render_word


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    """A tar archive of regular files (``mode`` "w:gz" to compress it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def word_png(text: str, seed: int = 0) -> bytes:
    image = render_word(text, np.random.default_rng(seed))
    return cv2.imencode(".png", image)[1].tobytes()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def mjsynth(root: Path):
    base = root / "mnt/ramdisk/max/90kDICT32px"
    lines = []
    for i, word in enumerate(["Hello", "world", "CRNN"]):
        _write(base / f"1/{i}/{i}_{word}_{i}.jpg", word_png(word, i))
        lines.append(f"./1/{i}/{i}_{word}_{i}.jpg {i}")
    _write(base / "2/1/7_EFFLORESCENT_24742.jpg", b"")  # empty, like the release's known-bad files
    lines += ["./2/1/7_EFFLORESCENT_24742.jpg 24742", "./2/2/8_missing_1.jpg 1"]
    _write(base / "annotation_train.txt", ("\n".join(lines) + "\n").encode())
    return base / "annotation_train.txt", None, ["Hello", "world", "CRNN"], Counter(
        undecodable_image=1, missing_image=1)


def iiit5k(root: Path):
    records = np.zeros((1, 3), dtype=[("ImgName", object), ("GroundTruth", object), ("smallLexi", object),
                                      ("mediumLexi", object)])
    for i, word in enumerate(["PRIVATE", "PARKING"]):
        _write(root / f"IIIT5K/test/{i}_1.png", word_png(word, i))
        records[0, i] = (f"test/{i}_1.png", word, np.array([word], dtype=object), np.array([word], dtype=object))
    _write(root / "IIIT5K/test/9_1.png", b"\x89PNG truncated")
    records[0, 2] = ("test/9_1.png", "BROKEN", np.array(["x"], dtype=object), np.array(["x"], dtype=object))
    scipy.io.savemat(root / "IIIT5K" / "testdata.mat", {"testdata": records})
    return root / "IIIT5K/testdata.mat", None, ["PRIVATE", "PARKING"], Counter(undecodable_image=1)


def svt(root: Path):
    scene = np.full((120, 300, 3), 230, np.uint8)
    for x, word in ((10, "LIVING"), (150, "ROOM")):
        crop = cv2.imdecode(np.frombuffer(word_png(word, x), np.uint8), cv2.IMREAD_COLOR)[:, :140]
        scene[20:20 + crop.shape[0], x:x + crop.shape[1]] = crop[:100]
    _write(root / "svt1/img/00_01.jpg", cv2.imencode(".jpg", scene)[1].tobytes())
    xml = ('<?xml version="1.0" encoding="utf-8"?><tagset><image><imageName>img/00_01.jpg</imageName>'
           '<Resolution x="300" y="120"/><taggedRectangles>'
           '<taggedRectangle height="60" width="140" x="-5" y="15"><tag>LIVING</tag></taggedRectangle>'
           '<taggedRectangle height="60" width="180" x="150" y="15"><tag>ROOM</tag></taggedRectangle>'
           '</taggedRectangles></image><image><imageName>img/gone.jpg</imageName><taggedRectangles>'
           '<taggedRectangle height="9" width="9" x="1" y="1"><tag>LOST</tag></taggedRectangle>'
           "</taggedRectangles></image></tagset>")
    _write(root / "svt1/test.xml", xml.encode())
    return root / "svt1/test.xml", None, ["LIVING", "ROOM"], Counter(missing_image=1)


def ic03(root: Path):
    entries = []
    for i, word in enumerate(["Tesco", "35p"]):
        _write(root / f"word/1/{i}.jpg", word_png(word, i))
        entries.append(f'<image file="word/1/{i}.jpg" tag="{word}" />')
    entries.append('<image file="word/1/9.jpg" />')
    _write(root / "word.xml", f'<?xml version="1.0"?><imagelist>{"".join(entries)}</imagelist>'.encode())
    return root / "word.xml", None, ["Tesco", "35p"], Counter(malformed_entry=1)


def ic13(root: Path, bom: bool = False):
    images = root / "Challenge2_Test_Task3_Images"
    for i, word in enumerate(["Tiredness", "kills"], start=1):
        _write(images / f"word_{i}.png", word_png(word, i))
    text = 'word_1.png, "Tiredness"\r\nword_2.png, "kills"\r\nword_3.png, "gone"\r\n'
    _write(root / "Challenge2_Test_Task3_GT.txt", (("\ufeff" if bom else "") + text).encode())
    return root / "Challenge2_Test_Task3_GT.txt", images, ["Tiredness", "kills"], Counter(missing_image=1)


def ic15(root: Path):
    return ic13(root, bom=True)


def svtp(root: Path):
    for name, word in (("13_15_0_par.jpg", "WYNDHAM"), ("13_16_0_par.jpg", "HOTEL")):
        _write(root / name, word_png(word, len(name)))
    _write(root / "gt.txt", b"13_15_0_par.jpg WYNDHAM\n13_16_0_par.jpg HOTEL\nlonely_line\n")
    return root / "gt.txt", None, ["WYNDHAM", "HOTEL"], Counter(malformed_line=1)


def cute80(root: Path):
    for i, word in enumerate(["RONALDO", "SALE"], start=1):
        _write(root / f"timage/{i:03d}.jpg", word_png(word, i))
    _write(root / "gt.txt", b"timage/001.jpg RONALDO 1 2 3\ntimage/002.jpg SALE\ntimage/003.jpg \xff\xfe\n")
    return root / "gt.txt", None, ["RONALDO", "SALE"], Counter(label_not_utf8=1)


def lmdb_set(root: Path, samples: list[tuple[bytes | None, bytes | None]], num_samples: int | None = None):
    """An LMDB in the clovaai layout; a None image or label leaves that key out."""
    import lmdb

    root.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(root), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(samples, start=1):
            if image is not None:
                txn.put(f"image-{i:09d}".encode(), image)
            if label is not None:
                txn.put(f"label-{i:09d}".encode(), label)
        txn.put(b"num-samples", str(len(samples) if num_samples is None else num_samples).encode())
    env.close()
    return root


def lmdb(root: Path):
    lmdb_set(root / "evaluation" / "SVTP", [
        (word_png("public", 1), b"public"), (b"not an image", b"broken"), (word_png("x", 2), None),
        (word_png("house", 3), b"house")], num_samples=5)
    return root / "evaluation" / "SVTP", None, ["public", "house"], Counter(
        undecodable_image=1, missing_key=2)


LAYOUTS = {"mjsynth": mjsynth, "iiit5k": iiit5k, "svt": svt, "ic03": ic03, "ic13": ic13, "ic15": ic15,
           "svtp": svtp, "cute80": cute80, "lmdb": lmdb}


def tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data))


def hostile_archive(path: Path, kind: str, name: str) -> Path:
    """An archive holding ``good.txt`` and a member that leaves the target: ``kind`` file, symlink or hardlink,
    ``name`` the member (a link as ``"name -> target"``)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("good.txt", b"good")
            info = zipfile.ZipInfo(name)
            if kind == "symlink":
                info.external_attr = 0o120777 << 16
            zf.writestr(info, b"/etc/passwd" if kind == "symlink" else b"evil")
        return path
    with tarfile.open(path, "w:gz") as tar:
        tar_member(tar, "good.txt", b"good")
        if kind == "file":
            tar_member(tar, name, b"evil")
        else:
            target, link_name = name.split(" -> ")
            tar_member(tar, target, kind=tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE, link=link_name)
            tar_member(tar, target + "/evil.txt", b"evil")  # written through the link, were it allowed
    return path


HOSTILE_MEMBERS = [("tar.gz", "file", "../evil.txt"), ("tar.gz", "file", "/tmp/evil.txt"),
                   ("tar.gz", "file", "d/../../evil.txt"), ("tar.gz", "symlink", "out -> /tmp"),
                   ("tar.gz", "symlink", "out -> ../../.."), ("tar.gz", "hardlink", "pw -> /etc/passwd"),
                   ("zip", "file", "../evil.txt"), ("zip", "file", "/tmp/evil.txt"), ("zip", "symlink", "pw")]


# Tars whose members each pass a check made on the names alone but would write outside the target, or write
# what is not a file: (name, type, link target, data) per member.
TRICKY_TARS = {
    "a symlink named with a trailing slash": [("a/", tarfile.SYMTYPE, "..", b""),
                                              ("a/pwned", tarfile.REGTYPE, "", b"evil")],
    "a symlink through an earlier one": [("a", tarfile.DIRTYPE, "", b""), ("a/b", tarfile.SYMTYPE, "..", b""),
                                         ("a/b/c", tarfile.SYMTYPE, "..", b""),
                                         ("a/b/c/pwned", tarfile.REGTYPE, "", b"evil")],
    "a hard link to a symlink": [("s", tarfile.SYMTYPE, "elsewhere", b""), ("h", tarfile.LNKTYPE, "s", b""),
                                 ("h", tarfile.REGTYPE, "", b"evil")],
    "a member of an unknown type": [("blob", b"9", "", b"x" * 5000)],
}


def tricky_tar(path: Path, members: list[tuple[str, bytes, str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
