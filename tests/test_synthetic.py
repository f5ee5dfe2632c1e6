import io
import tarfile
import zipfile

import numpy as np
import scipy.io

from crnn.data.render import random_word, render_word
from crnn.data.synthetic import SyntheticSpec, build_mirror

SMALL = SyntheticSpec(seed=11, train_size=20, val_size=4, test_size=6)


def test_same_seed_gives_byte_identical_archives(tmp_path):
    first = build_mirror(SMALL, tmp_path / "a")
    second = build_mirror(SMALL, tmp_path / "b")
    assert [e.files[0].sha256 for e in first] == [e.files[0].sha256 for e in second]
    other = build_mirror(SyntheticSpec(seed=12, train_size=20, val_size=4, test_size=6), tmp_path / "c")
    assert all(a.files[0].sha256 != b.files[0].sha256 for a, b in zip(first, other, strict=True))


def test_archives_hold_the_real_layouts(tmp_path):
    entries = {e.name: e for e in build_mirror(SMALL, tmp_path)}
    assert set(entries) == {"mjsynth", "IIIT5K", "SVT", "IC13"}

    with tarfile.open(tmp_path / entries["mjsynth"].files[0].name) as tar:
        names = tar.getnames()
        annotation = tar.extractfile("mnt/ramdisk/max/90kDICT32px/annotation_train.txt").read().decode()
    lines = annotation.splitlines()
    assert len(lines) == 20
    path, lex_index = lines[0].split(" ")
    assert path.startswith("./") and path.endswith(f"_{lex_index}.jpg")
    assert "mnt/ramdisk/max/90kDICT32px/" + path[2:] in names

    with tarfile.open(tmp_path / entries["IIIT5K"].files[0].name) as tar:
        mat = scipy.io.loadmat(io.BytesIO(tar.extractfile("IIIT5K/testdata.mat").read()))
    records = mat["testdata"]
    assert records.shape == (1, 6)
    assert {"ImgName", "GroundTruth", "smallLexi", "mediumLexi"} <= set(records.dtype.names)

    with zipfile.ZipFile(tmp_path / entries["SVT"].files[0].name) as zf:
        xml = zf.read("svt1/test.xml").decode()
    assert "<taggedRectangle" in xml and "<imageName>img/" in xml

    with zipfile.ZipFile(tmp_path / entries["IC13"].files[0].name) as zf:
        gt = zf.read("Challenge2_Test_Task3_Images/gt.txt").decode()
    assert gt.startswith('word_1.png, "')


def test_rendering_is_deterministic_and_varied():
    images = [render_word("Crnn", np.random.default_rng(seed)) for seed in (1, 1, 2)]
    assert np.array_equal(images[0], images[1])
    assert images[0].shape != images[2].shape or not np.array_equal(images[0], images[2])
    assert images[0].dtype == np.uint8 and images[0].ndim == 3
    words = {random_word(np.random.default_rng(seed)) for seed in range(200)}
    assert len(words) > 150
    assert any(w.isupper() for w in words) and any(w.islower() for w in words)
    assert any(c.isdigit() for w in words for c in w)
