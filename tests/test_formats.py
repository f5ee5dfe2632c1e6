"""Every format converts from a fixture in its real layout; bad samples are skipped and counted by reason."""

from collections import Counter

import pytest

from crnn.config import ModelConfig
from crnn.data.convert import convert_split
from crnn.data.input_pipeline import make_dataset
from crnn.data.readers import find_index, reader_for
from crnn.data.shards import LabelPolicy
from tests.layouts import LAYOUTS, lmdb_set, word_png


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_reader_yields_good_samples_and_counts_bad_ones(fmt, tmp_path):
    index, images, labels, skips = LAYOUTS[fmt](tmp_path)
    skipped = Counter()
    samples = list(reader_for(fmt)(index, skipped, images))
    assert [s.label for s in samples] == labels
    assert skipped == skips
    assert all(s.image.ndim == 3 and min(s.image.shape[:2]) >= 2 for s in samples)


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_convert_writes_the_figures_in_the_manifest(fmt, tmp_path):
    index, images, labels, skips = LAYOUTS[fmt](tmp_path / "in")
    # The folder is enough: the index is found by the format's usual file names (IC13's images are apart).
    source = index if fmt in ("ic13", "ic15") else tmp_path / "in"
    manifest = convert_split(fmt, source, tmp_path / "out", images=images)
    assert manifest["num_samples"] == len(labels)
    assert manifest["skipped"] == dict(sorted(skips.items()))
    assert manifest["inputs"]["format"] == fmt
    texts = [t.decode() for _, batch in make_dataset(tmp_path / "out", ModelConfig(), 8, training=False)
             for t in batch.numpy()]
    assert texts == labels


def test_benchmark_subset_rules_and_unfiltered_sets(tmp_path):
    root = tmp_path / "ic13"
    images = root / "imgs"
    words = ["Tiredness", "kills", "AT", "ok!", "x" * 30, "!!"]
    for i in range(1, len(words) + 1):
        (images / f"word_{i}.png").parent.mkdir(parents=True, exist_ok=True)
        (images / f"word_{i}.png").write_bytes(word_png("ab", i))
    (root / "gt.txt").write_text("".join(f'word_{i}.png, "{w}"\n' for i, w in enumerate(words, start=1)))

    m1015 = convert_split("ic13", root / "gt.txt", tmp_path / "1015", images=images, policy=LabelPolicy("alnum"))
    assert m1015["num_samples"] == 3 and m1015["skipped"] == {"filtered_not_alnum": 2, "label_too_long": 1}
    m857 = convert_split("ic13", root / "gt.txt", tmp_path / "857", images=images,
                         policy=LabelPolicy("alnum_min3"))
    assert m857["skipped"] == {"filtered_not_alnum": 2, "filtered_short": 1, "label_too_long": 1}
    full = convert_split("ic13", root / "gt.txt", tmp_path / "full", images=images,
                         policy=LabelPolicy(unfiltered=True))
    assert full["num_samples"] == 6 and full["skipped"] == {}
    batches = list(make_dataset(tmp_path / "full", ModelConfig(), 8, training=False))
    assert batches[0][0]["label_length"].numpy().tolist() == [9, 5, 2, 2, 30, 0]


def test_training_data_drops_labels_ctc_cannot_align(tmp_path):
    root = tmp_path / "lmdb"
    lmdb_set(root, [(word_png("a", 1), b"a" * 20), (word_png("b", 2), b"ab" * 12), (word_png("c", 3), b"abc")])
    train = convert_split("lmdb", root, tmp_path / "train", policy=LabelPolicy(for_training=True))
    assert train["skipped"] == {"label_unalignable": 1}  # 20 + 19 repeats > 26 time steps
    bench = convert_split("lmdb", root, tmp_path / "bench")
    assert bench["num_samples"] == 3


def test_lmdb_without_a_count_is_a_clear_error(tmp_path):
    import lmdb

    env = lmdb.open(str(tmp_path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"many")
    env.close()
    with pytest.raises(ValueError, match="'num-samples' is b'many', not a count"):
        list(reader_for("lmdb")(tmp_path, Counter()))
    with pytest.raises(FileNotFoundError, match="no data.mdb"):
        list(reader_for("lmdb")(tmp_path / "elsewhere", Counter()))


def test_find_index_names_ambiguity_and_absence(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "test.xml").write_text("<tagset/>")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "test.xml").write_text("<tagset/>")
    with pytest.raises(ValueError, match="several svt index files"):
        find_index("svt", tmp_path)
    with pytest.raises(FileNotFoundError, match="no ic03 index file"):
        find_index("ic03", tmp_path)
    assert find_index("svt", tmp_path / "a") == tmp_path / "a" / "test.xml"


def test_index_paths_outside_the_image_root_are_skipped(tmp_path):
    (tmp_path / "gt.txt").write_text("../secret.jpg HELLO\n/etc/passwd ROOT\nok.jpg FINE\n")
    (tmp_path / "ok.jpg").write_bytes(word_png("FINE"))
    skipped = Counter()
    samples = list(reader_for("svtp")(tmp_path / "gt.txt", skipped))
    assert [s.label for s in samples] == ["FINE"]
    assert skipped == Counter(path_outside_root=2)


def test_an_unfiltered_benchmark_cannot_be_trained_on(tmp_path):
    from crnn.config import recipe_for
    from crnn.train.loop import train_model

    index, images, _, _ = LAYOUTS["cute80"](tmp_path / "in")
    convert_split("cute80", index, tmp_path / "data", images=images, policy=LabelPolicy(unfiltered=True))
    with pytest.raises(ValueError, match="unfiltered benchmark split.*not trained on"):
        train_model(recipe_for("tiny"), tmp_path / "data", tmp_path / "trained")
