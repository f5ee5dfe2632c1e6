from collections import Counter

import cv2
import numpy as np
import pytest
import scipy.io

from crnn.data.readers import reader_for

read_mjsynth, read_iiit5k, read_svt, read_ic13 = (reader_for(f) for f in ("mjsynth", "iiit5k", "svt", "ic13"))


def _png(path, height=20, width=50):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 200, np.uint8))


def test_synthetic_download_reads_back_in_every_format(raw_dir):
    from crnn.data.download import read_datasets
    from crnn.data.readers import find_index, open_source
    from crnn.files import sha256_of

    for dataset in read_datasets(raw_dir):
        for entry in dataset["splits"].values():
            skipped = Counter()
            samples = list(reader_for(dataset["format"])(raw_dir / entry["index"], skipped))
            assert samples, dataset["name"]
            assert skipped == Counter(), dataset["name"]
            assert all(s.image.ndim == 3 and s.image.size and s.label for s in samples)
            source = open_source(dataset["format"], find_index(dataset["format"], raw_dir / entry["index"]))
            # The index's digest, for the manifest: an LMDB's comes from its download's files instead.
            expected = None if dataset["format"] == "lmdb" else sha256_of(source.index)
            assert source.sha256 == expected, dataset["name"]


def test_mjsynth_label_from_file_name_and_bad_images_counted(tmp_path):
    _png(tmp_path / "1" / "1" / "3_Hello_7.jpg")
    (tmp_path / "1" / "1" / "4_empty_8.jpg").write_bytes(b"")
    (tmp_path / "1" / "1" / "5_trunc_9.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "annotation_train.txt").write_bytes(
        b"./1/1/3_Hello_7.jpg 7\n./1/1/4_empty_8.jpg 8\n./1/1/5_trunc_9.jpg 9\n"
        b"./1/1/6_gone_1.jpg 1\n./1/1/noword.jpg 2\n\xff\xfe bad\n")
    skipped = Counter()
    samples = list(read_mjsynth(tmp_path / "annotation_train.txt", skipped))
    assert [(s.label, s.source_id) for s in samples] == [("Hello", "./1/1/3_Hello_7.jpg")]
    assert skipped == Counter(undecodable_image=2, missing_image=1, malformed_line=1, label_not_utf8=1)


def test_images_over_the_size_cap_are_counted_not_loaded(tmp_path, monkeypatch):
    from crnn.data import readers

    _png(tmp_path / "1" / "3_Small_7.png")
    big = tmp_path / "1" / "4_Huge_8.png"
    _png(big, height=400, width=900)
    monkeypatch.setattr(readers.core, "_MAX_IMAGE_BYTES", big.stat().st_size - 1)
    (tmp_path / "annotation_train.txt").write_text("./1/3_Small_7.png 7\n./1/4_Huge_8.png 8\n")
    skipped = Counter()
    samples = list(read_mjsynth(tmp_path / "annotation_train.txt", skipped))
    assert [s.label for s in samples] == ["Small"]
    assert skipped == Counter(image_too_large=1)


@pytest.mark.parametrize("size", [0, 10, 1 << 16, (1 << 16) + 1, 3 << 16])
def test_read_capped_reads_whole_files_and_stops_at_the_cap(tmp_path, size):
    from crnn.data.readers import read_capped

    path = tmp_path / "blob"
    data = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
    path.write_bytes(data)
    assert read_capped(str(path), size + 1) == data
    assert read_capped(str(path), max(size // 2, 1)) == data[: max(size // 2, 1)]


def test_iiit5k_mat(tmp_path):
    records = np.zeros((1, 2), dtype=[("ImgName", object), ("GroundTruth", object)])
    records[0, 0] = ("test/1_1.png", "PRIVATE")
    records[0, 1] = ("test/missing.png", "X")
    scipy.io.savemat(tmp_path / "testdata.mat", {"testdata": records})
    _png(tmp_path / "test" / "1_1.png")
    skipped = Counter()
    samples = list(read_iiit5k(tmp_path / "testdata.mat", skipped))
    assert [s.label for s in samples] == ["PRIVATE"]
    assert skipped == Counter(missing_image=1)


def test_iiit5k_wrong_structure_is_a_clear_error(tmp_path):
    scipy.io.savemat(tmp_path / "testdata.mat", {"something": np.zeros(3)})
    with pytest.raises(ValueError, match="testdata.mat: no 'testdata'"):
        list(read_iiit5k(tmp_path / "testdata.mat", Counter()))


def test_svt_crops_and_clamps_boxes(tmp_path):
    _png(tmp_path / "img" / "a.jpg", height=100, width=200)
    (tmp_path / "test.xml").write_text(
        "<tagset><image><imageName>img/a.jpg</imageName><taggedRectangles>"
        '<taggedRectangle x="-10" y="90" width="50" height="30"><tag>EDGE</tag></taggedRectangle>'
        '<taggedRectangle x="10" y="10" width="40" height="20"><tag>INSIDE</tag></taggedRectangle>'
        '<taggedRectangle x="500" y="500" width="40" height="20"><tag>OUT</tag></taggedRectangle>'
        '<taggedRectangle x="a" y="1" width="4" height="2"><tag>BAD</tag></taggedRectangle>'
        "</taggedRectangles></image></tagset>")
    skipped = Counter()
    samples = list(read_svt(tmp_path / "test.xml", skipped))
    assert [(s.label, s.image.shape[:2]) for s in samples] == [("EDGE", (10, 40)), ("INSIDE", (20, 40))]
    assert skipped == Counter(box_outside_image=1, malformed_box=1)


def test_svt_missing_scene_counts_every_word_in_it(tmp_path):
    (tmp_path / "test.xml").write_text(
        "<tagset><image><imageName>img/gone.jpg</imageName><taggedRectangles>"
        '<taggedRectangle x="1" y="1" width="5" height="5"><tag>A</tag></taggedRectangle>'
        '<taggedRectangle x="1" y="1" width="5" height="5"><tag>B</tag></taggedRectangle>'
        "</taggedRectangles></image></tagset>")
    skipped = Counter()
    assert list(read_svt(tmp_path / "test.xml", skipped)) == []
    assert skipped == Counter(missing_image=2)


def test_svt_refuses_external_entities(tmp_path):
    (tmp_path / "test.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<tagset><image><imageName>&x;</imageName></image></tagset>")
    from defusedxml import EntitiesForbidden

    with pytest.raises(EntitiesForbidden):
        list(read_svt(tmp_path / "test.xml", Counter()))


def test_ic13_quoted_labels_with_bom(tmp_path):
    _png(tmp_path / "word_1.png")
    _png(tmp_path / "word_2.png")
    (tmp_path / "gt.txt").write_bytes(
        '\ufeffword_1.png, "Tiredness"\r\nword_2.png, "say \\"hi\\", ok"\r\nno comma here\r\n'.encode())
    skipped = Counter()
    samples = list(read_ic13(tmp_path / "gt.txt", skipped))
    assert [(s.source_id, s.label) for s in samples] == [("word_1.png", "Tiredness"), ("word_2.png", 'say "hi", ok')]
    assert skipped == Counter(malformed_line=1)


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="'lmdbx'"):
        reader_for("lmdbx")


def _annotation(path, lines):
    path.write_bytes(b"".join(lines))
    return path


_LINES = [b"\xef\xbb\xbf./1/1_Hello_1.jpg 1\r\n", b"\n", b"./1/2_World_2.jpg 2\n", b"no_word.jpg 3\n",
          b"./1/3_caf\xe9_3.jpg 4\n", b"   \n", b"../4_up_4.jpg 5\n", b"./2/5_crnn_5.jpg 6\r\n", b"./2/6_Last_6.jpg 7"]


def test_parts_of_a_text_index_list_apart_what_the_whole_lists(tmp_path, caplog):
    from crnn.data.readers import open_source

    index = _annotation(tmp_path / "annotation_train.txt", _LINES)
    source = open_source("mjsynth", index)
    assert source.items == len(_LINES)
    whole_skipped = Counter()
    whole = source.entries(whole_skipped)
    assert [e.label for e in whole] == ["Hello", "World", "crnn", "Last"]
    assert whole_skipped == Counter(malformed_line=1, label_not_utf8=1, path_outside_root=1)
    for cut in range(len(_LINES) + 1):
        skipped_a, skipped_b = Counter(), Counter()
        a = source.part(range(0, cut)).entries(skipped_a)
        b = source.part(range(cut, len(_LINES))).entries(skipped_b)
        assert a + b == whole and skipped_a + skipped_b == whole_skipped, cut
    caplog.clear()
    source.part(range(4, 7)).entries(Counter())  # lines 5 to 7: messages name them by their number in the file
    assert f"{index}:5" in caplog.text and f"{index}:7" in caplog.text and f"{index}:4" not in caplog.text


def test_a_stray_carriage_return_or_nul_byte_in_a_text_index(tmp_path, caplog):
    """Lines end at \\n only, as the parts are cut: a \\r inside a line shifts no numbering; a path with a NUL
    byte is a malformed line, counted, not an error that names nothing."""
    from crnn.data.readers import open_source

    index = _annotation(tmp_path / "annotation_train.txt", [
        b"./1/1_Hello_1.jpg 1\n", b"./1/2_Wor\rld_2.jpg 2\n", b"./1/3_a\x00b_3.jpg 3\n", b"bad 4\n"])
    source = open_source("mjsynth", index)
    skipped = Counter()
    assert [e.label for e in source.entries(skipped)] == ["Hello", "Wor\rld"]
    assert source.items == 4 and skipped == Counter(malformed_line=2)
    assert f"{index}:3" in caplog.text and "NUL" in caplog.text and f"{index}:4" in caplog.text
    assert f"{index}:5" not in caplog.text


def test_line_bounds_of_empty_and_unterminated_files(tmp_path):
    from crnn.data.readers import line_bounds, open_source

    assert line_bounds(_annotation(tmp_path / "empty.txt", [])).tolist() == [0]
    assert line_bounds(_annotation(tmp_path / "one.txt", [b"a\n"])).tolist() == [0, 2]
    assert line_bounds(_annotation(tmp_path / "open.txt", [b"a\n", b"bc"])).tolist() == [0, 2, 4]
    assert open_source("mjsynth", tmp_path / "empty.txt").items == 0
    with pytest.raises(ValueError, match="not within"):
        open_source("mjsynth", tmp_path / "one.txt").part(range(0, 2))


def test_opening_an_index_reads_it_once_for_its_lines_and_its_digest(tmp_path, monkeypatch):
    from crnn.data import readers
    from crnn.files import sha256_of

    index = _annotation(tmp_path / "annotation_train.txt", [f"./1/{i}_w_{i}.jpg {i}\n".encode() for i in range(999)])
    monkeypatch.setattr(readers.text, "_SCAN", 1000)  # several chunks, the last one short
    source = readers.open_source("mjsynth", index)
    assert source.sha256 == sha256_of(index) and source.items == 999
    assert source.bounds.tolist() == [0] + [i + 1 for i, c in enumerate(index.read_bytes()) if c == 10]


INDEX_CHANGES = ["append", "rewrite in place", "rewrite in place, same time", "replace"]


def change_index(index, lines, change):
    """Rewrites the annotation file ``index`` of ``lines`` (bytes) as ``change`` (one of ``INDEX_CHANGES``)."""
    import os

    status = index.stat()
    if change == "append":
        with open(index, "ab") as stream:
            stream.write(b"./1/0_new_0.jpg 0\n")
    elif change.startswith("rewrite in place"):  # the same size, other bytes
        index.write_bytes(b"".join(lines[::-1]))
        later = status.st_mtime_ns + (1 if change == "rewrite in place" else 0)  # or the clock did not move
        os.utime(index, ns=(status.st_atime_ns, later))
    else:
        _annotation(index.with_name("new.txt"), lines[::-1]).replace(index)


@pytest.mark.parametrize("change", INDEX_CHANGES)
def test_a_part_of_an_index_changed_since_it_was_opened_is_refused(tmp_path, change):
    import re

    from crnn.data.readers import IndexChanged, open_source

    lines = [f"./1/{i}_w{i}_{i}.jpg {i}\n".encode() for i in range(100)]
    index = _annotation(tmp_path / "annotation_train.txt", lines)
    part = open_source("mjsynth", index).part(range(50, 60))
    assert len(part.entries(Counter())) == 10
    change_index(index, lines, change)
    expected = f"{index}: changed since the conversion opened it; its lines 51-60"
    with pytest.raises(IndexChanged, match=re.escape(expected)):
        part.entries(Counter())


def test_a_part_travels_to_worker_processes_as_a_few_numbers(tmp_path):
    import pickle

    from crnn.data.readers import Entry, Part, open_source

    lines = [f"./1/{i}_w{i}_{i}.jpg {i}\n".encode() for i in range(5000)]
    part = open_source("mjsynth", _annotation(tmp_path / "annotation_train.txt", lines)).part(range(4000, 4100))
    assert len(pickle.dumps(part)) < 500  # the shard's byte span, not its entries
    labels = [e.label for e in pickle.loads(pickle.dumps(part)).entries(Counter())]
    assert labels == [f"w{i}" for i in range(4000, 4100)]
    entries = (Entry("a.jpg", "LIVING", "a.jpg#0", (1, 2, 30, 12)), Entry("b.jpg", "ROOM", "b.jpg#1"))
    svt = Part("svt", tmp_path / "test.xml", tmp_path, range(2), listed=entries)
    assert pickle.loads(pickle.dumps(svt)) == svt
    lmdb = Part("lmdb", tmp_path, tmp_path, range(7, 9))
    assert pickle.loads(pickle.dumps(lmdb)).entries(Counter()) == [Entry(f"00000000{i}", None, f"00000000{i}")
                                                                    for i in (8, 9)]


def _ic13_part(root, count):
    from crnn.data.readers import Entry, Part

    entry = Entry("word_1.png", "kills", "word_1.png")
    return Part("ic13", root / "gt.txt", root, range(count), listed=(entry,) * count)


def test_a_missing_image_folder_counts_every_image_missing(tmp_path):
    skipped = Counter()
    assert list(_ic13_part(tmp_path / "absent", 3).samples(skipped)) == [] and skipped == Counter(missing_image=3)


def test_an_image_folder_that_cannot_be_opened_for_a_passing_reason_is_an_error(tmp_path, monkeypatch):
    import errno
    import os

    real_open = os.open

    def no_descriptors_left(path, flags, *args, **kwargs):
        if str(path) == str(tmp_path):
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_descriptors_left)
    with pytest.raises(OSError, match="Too many open files"):  # not counted as a missing image: a resume trusts that
        list(_ic13_part(tmp_path, 1).samples(Counter()))


@pytest.mark.parametrize(("path", "reason"), [
    ("1/2_word_3.jpg", None), ("1/2_a..b_3.jpg", None), ("./1/2_x_3.jpg", None),
    ("/etc/passwd", "path_outside_root"), ("../up.jpg", "path_outside_root"), ("a\\..\\b.jpg", "path_outside_root"),
    ("a\0b.jpg", "malformed_line"),
])
def test_index_paths_stay_under_the_image_root_and_a_refusal_names_the_line(path, reason, caplog):
    from crnn.data.readers.core import under_root as _relative

    skipped = Counter()
    assert _relative(path, skipped, "annotation.txt", 7) is (reason is None)
    assert skipped == (Counter({reason: 1}) if reason else Counter())
    assert ("annotation.txt:7" in caplog.text) is (reason is not None)
