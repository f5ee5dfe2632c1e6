import io
import tarfile
import zipfile
from collections import Counter

import cv2
import numpy as np
import pytest
import scipy.io

from crnn.data import synthetic
from crnn.data.synth import fonts, render, textures, words
from crnn.data.synth.render import draw_word, render_word
from crnn.data.synth.splits import HELDOUT, TRAIN, word_split
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
    assert set(entries) == {"mjsynth", "IIIT5K", "SVT", "IC13", "HeldOut"}

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

    with zipfile.ZipFile(tmp_path / entries["HeldOut"].files[0].name) as zf:
        held_out = [line.split(", ", 1)[1].strip('"') for line in zf.read("HeldOut/gt.txt").decode().splitlines()]
    assert len(held_out) == 6 and all(word_split(word) == HELDOUT for word in held_out)


def test_mjsynth_file_names_hold_letters_and_digits_only(tmp_path):
    """Prices and dates are drawn with their signs; the release's file names (its labels) have none."""
    members = synthetic.mjsynth_members(SyntheticSpec(seed=2, train_size=300, val_size=0, test_size=0))
    labels = [name.rsplit("/", 1)[1].split("_")[1] for name in members if name.endswith(".jpg")]
    assert len(labels) == 300 and all(label.isascii() and label.isalnum() for label in labels)
    assert any(label.isdigit() for label in labels)


def test_rendering_is_deterministic_and_varied():
    images = [render_word("Crnn", np.random.default_rng(seed)) for seed in (1, 1, 2)]
    assert np.array_equal(images[0], images[1])
    assert images[0].shape != images[2].shape or not np.array_equal(images[0], images[2])
    assert images[0].dtype == np.uint8 and images[0].ndim == 3
    drawn = [draw_word(TRAIN, np.random.default_rng(seed)) for seed in range(300)]
    texts = {text for text, _ in drawn}
    assert len(texts) > 250
    assert any(w.isupper() for w in texts) and any(w.islower() for w in texts) and any(w.istitle() for w in texts)
    assert any(c.isdigit() for w in texts for c in w) and any(c in "$/.-" for w in texts for c in w)
    assert len({image.shape for _, image in drawn}) > 100


def test_bent_strokes_keep_the_word_within_a_bounded_displacement(monkeypatch):
    monkeypatch.setattr(render, "_BENT", 1.0)
    glyph, size, _ = render._glyph_mask("Hamburgefonts", np.random.default_rng(3), TRAIN)
    bent = render._bend_strokes(glyph, size, np.random.default_rng(4))
    assert bent.shape == glyph.shape and not np.allclose(bent, glyph, atol=0.05)
    assert abs(bent.sum() - glyph.sum()) < 0.15 * glyph.sum()  # the ink is moved, not lost or smeared
    # No stroke moves further than the field's bound: twice its largest scale.
    reach = int(np.ceil(2 * render._BEND_SCALE[1] * size)) + 1
    around = cv2.dilate((glyph > 0.1).astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    assert not ((bent > 0.5) & (around == 0)).any()


def test_only_the_training_images_are_bent(monkeypatch):
    bent = []
    real = render._bend_strokes
    monkeypatch.setattr(render, "_bend_strokes", lambda glyph, size, rng: bent.append(1) or real(glyph, size, rng))
    synthetic.mjsynth_members(SMALL)
    assert len(bent) == SMALL.train_size  # not the validation images
    bent.clear()
    for members in (synthetic.iiit5k_members, synthetic.svt_members, synthetic.ic13_members):
        members(SMALL)
    synthetic.ic13_members(SMALL, folder="HeldOut", stream=6, split=HELDOUT)
    assert bent == []


def test_the_splits_share_no_font_surface_or_word():
    assert not set(fonts.TRAIN_FAMILIES) & set(fonts.HELDOUT_FAMILIES)
    assert len(fonts.TRAIN_FAMILIES) >= 40 and len(fonts.HELDOUT_FAMILIES) >= 10
    assert not set(textures.PHOTOS[TRAIN]) & set(textures.PHOTOS[HELDOUT])
    assert not set(textures.PROCEDURAL[TRAIN]) & set(textures.PROCEDURAL[HELDOUT])
    train, held_out = (set().union(*words.lexicon(split).values()) for split in (TRAIN, HELDOUT))
    assert len(train) > 100_000 and len(held_out) > 10_000 and not train & held_out
    for split in (TRAIN, HELDOUT):
        drawn = [words.draw(split, np.random.default_rng(seed)) for seed in range(500)]
        assert {word_split(word) for word in drawn} == {split}


@pytest.mark.parametrize("split", [TRAIN, HELDOUT])
def test_every_font_draws_letters_and_digits(split):
    """Each packaged face has glyphs for the whole charset, in both cases."""
    needed = set(map(ord, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    faces = [face for family in fonts.faces(split) for face in family]
    assert {face.family for face in faces} == set(fonts.FAMILIES[split])
    assert [face.path.name for face in faces if not needed <= fonts._characters(face.path)] == []


@pytest.mark.parametrize("split", [TRAIN, HELDOUT])
def test_each_kind_of_face_is_drawn_as_often_however_many_families_it_has(split):
    grouped = fonts.kinds(split)
    assert set(grouped) == {"SANS_SERIF", "SERIF", "DISPLAY", "HANDWRITING", "MONOSPACE"}
    kind_of = {fonts.FAMILIES[split][index]: kind for kind, members in grouped.items() for index in members}
    rng = np.random.default_rng(0)
    drawn = Counter(kind_of[fonts.pick(split, "Word", rng)[0].family] for _ in range(2000))
    # 400 expected of each; drawing families evenly would give sans serif over 1,000 in training.
    assert all(300 <= drawn[kind] <= 500 for kind in grouped), drawn


def test_missing_fonts_are_named_with_the_package_to_install(monkeypatch):
    import fontpkg

    monkeypatch.setattr(fontpkg, "families", lambda: {})
    fonts.faces.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="fontpkg-open-sans"):
            fonts.faces(HELDOUT)
    finally:
        fonts.faces.cache_clear()


def test_rendering_on_every_core_gives_the_same_bytes(monkeypatch):
    serial = [image.tobytes() for _, image in synthetic._word_images(5, 1, 40)]
    monkeypatch.setattr(synthetic, "_PARALLEL_FROM", 10)
    monkeypatch.setattr(synthetic.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    with synthetic._renderer(40) as render:
        assert render is not map  # a process pool
    assert [image.tobytes() for _, image in synthetic._word_images(5, 1, 40)] == serial


def test_without_worker_processes_rendering_goes_on_in_one(monkeypatch, caplog):
    def no_pool(*args, **kwargs):
        raise OSError(38, "Function not implemented")

    serial = [image.tobytes() for _, image in synthetic._word_images(5, 1, 12)]
    monkeypatch.setattr(synthetic, "_PARALLEL_FROM", 10)
    monkeypatch.setattr(synthetic.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(synthetic, "ProcessPoolExecutor", no_pool)
    assert [image.tobytes() for _, image in synthetic._word_images(5, 1, 12)] == serial
    assert "rendering in one process" in caplog.text
