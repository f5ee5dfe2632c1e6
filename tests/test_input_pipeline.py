"""Converted data: the label policy, the manifest, and tf.data batches read back from the shards."""

import json

import cv2
import numpy as np
import pytest

from crnn.config import ModelConfig
from crnn.data.convert import convert_split
from crnn.data.input_pipeline import make_dataset, read_manifest
from crnn.data.shards import LabelPolicy


def _list_layout(root, labels):
    """An image-label list (SVTP's layout) of random images, one per label."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        cv2.imwrite(str(root / f"{i}.png"), rng.integers(0, 255, (30, 80, 3), dtype=np.uint8))
    (root / "gt.txt").write_text("".join(f"{i}.png {label}\n" for i, label in enumerate(labels)))
    return root / "gt.txt"


def _convert(tmp_path, labels, model=None, **kwargs):
    return convert_split("svtp", _list_layout(tmp_path / "in", labels), tmp_path / "out", model=model, **kwargs)


def test_label_policy_and_manifest(tmp_path):
    manifest = _convert(tmp_path, ["Hello", "a-b", "!!!", "x" * 26, "ok", "aaaaaaaaaaaaaaaaaaaa"], shard_size=2,
                        policy=LabelPolicy(for_training=True))
    assert manifest["num_samples"] == 3
    assert [s["count"] for s in manifest["shards"]] == [2, 0, 1]
    assert manifest["skipped"] == {"empty_label": 1, "label_too_long": 1, "label_unalignable": 1}
    assert manifest["labels_normalised"] == 2
    assert manifest["num_listed"] == 6
    assert manifest["schema_version"] == 1 and manifest["charset"] == ModelConfig().charset
    assert len(manifest["inputs"]["index_sha256"]) == 64
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "shard-00000.tfrecord", "shard-00001.tfrecord", "shard-00002.tfrecord"]


def test_dataset_round_trip(tmp_path):
    model = ModelConfig()
    _convert(tmp_path, ["Hello", "a-b", "ok"], shard_size=2)
    features, texts = next(iter(make_dataset(tmp_path / "out", model, batch_size=8, training=False)))
    assert features["image"].shape == (3, 32, 100, 1)
    assert features["label"].shape == (3, 5)  # evaluation pads to the batch's longest label
    assert features["label_length"].numpy().tolist() == [5, 2, 2]
    assert features["label"].numpy()[0, :5].tolist() == [17, 14, 21, 21, 24]  # "hello"
    assert [t.decode() for t in texts.numpy()] == ["Hello", "a-b", "ok"]
    stored = cv2.resize(cv2.imread(str(tmp_path / "in" / "0.png"), cv2.IMREAD_GRAYSCALE), (100, 32),
                        interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(features["image"].numpy()[0, ..., 0], stored)


def test_a_charset_of_more_than_256_characters_keeps_its_class_ids(tmp_path):
    chars = "".join(chr(0x4E00 + i) for i in range(300))  # CJK ideographs: ids past one byte and past 127
    model = ModelConfig(charset=chars, max_label_length=5)
    _convert(tmp_path, [chars[0] + chars[130] + chars[299]], model=model)
    features, _ = next(iter(make_dataset(tmp_path / "out", model, batch_size=1, training=False)))
    assert features["label"].numpy()[0].tolist() == [0, 130, 299]


def test_training_batches_have_a_fixed_shape(tmp_path):
    model = ModelConfig()
    _convert(tmp_path, ["ab"] * 5, shard_size=2)
    batches = make_dataset(tmp_path / "out", model, batch_size=4, training=True).take(3)
    assert [(f["image"].shape[0], f["label"].shape[1]) for f, _ in batches] == [(4, model.max_label_length)] * 3


def test_our_datasets_run_without_tf_datas_tuning_thread(tmp_path):
    """Freeing an iterator whose tuning thread missed its wake-up waits out the thread's sleep, up to a
    minute (``without_tuning_thread`` says where in TensorFlow); training's and evaluation's input run
    untuned, and still read every sample."""
    _convert(tmp_path, ["ab", "cd", "ef"], shard_size=2)
    for training in (True, False):
        dataset = make_dataset(tmp_path / "out", ModelConfig(), batch_size=3, training=training)
        assert dataset.options().autotune.enabled is False, training  # 2.6's switch: tests/container
        # Training draws from a shuffled, repeated stream: enough batches that no word can plausibly be missed.
        texts = {text for _, batch in dataset.take(20) for text in batch.numpy().tolist()}
        assert texts == {b"ab", b"cd", b"ef"}, training


def test_incompatible_model_is_a_clear_error(tmp_path):
    _convert(tmp_path, ["ab"])
    with pytest.raises(ValueError, match="convert the data again"):
        make_dataset(tmp_path / "out", ModelConfig(charset="abc"), batch_size=1, training=False)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_manifest(tmp_path / "elsewhere")


def test_empty_data_and_longer_labels_are_clear_errors(tmp_path):
    _convert(tmp_path / "e", ["!!", "??"])
    with pytest.raises(ValueError, match="no samples to read"):
        make_dataset(tmp_path / "e" / "out", ModelConfig(), batch_size=2, training=True)
    _convert(tmp_path / "l", ["ab"], model=ModelConfig(max_label_length=26))
    with pytest.raises(ValueError, match="labels may be 26 long, over the model's 25"):
        make_dataset(tmp_path / "l" / "out", ModelConfig(), batch_size=1, training=False)


def test_converting_again_with_other_settings_leaves_no_stale_shards(tmp_path):
    _convert(tmp_path, ["ab"] * 5, shard_size=2)
    assert len(list((tmp_path / "out").glob("shard-*"))) == 3
    _convert(tmp_path, ["ab"] * 5, shard_size=4)
    assert sorted(p.name for p in (tmp_path / "out").glob("shard-*")) == ["shard-00000.tfrecord",
                                                                         "shard-00001.tfrecord"]


@pytest.mark.parametrize(("shard_size", "workers"), [(3, 2), (100, 2), (4, 4)])  # by shard, by record, by record
def test_each_worker_reads_its_own_part(tmp_path, shard_size, workers):
    import tensorflow as tf

    labels = [f"w{i}" for i in range(10)]
    _convert(tmp_path, labels, shard_size=shard_size)
    seen = []
    for pipeline in range(workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=pipeline)
        dataset = make_dataset(tmp_path / "out", ModelConfig(), 1, training=True, input_context=context)
        # The training stream draws from a large shuffle buffer of the repeated part, each draw close to uniform:
        # 40 draws miss one of a worker's six labels with odds of 6 x (5/6)^40, about 0.4 %; 300, about 1e-23.
        part = {t.decode() for _, batch in dataset.take(300) for t in batch.numpy()}
        seen.append(part)
    assert sum(len(part) for part in seen) == len(labels)  # disjoint
    assert set().union(*seen) == set(labels)


def test_images_of_any_channel_layout_become_the_model_input():
    from crnn.preprocess import to_model_input

    gray, colour = ModelConfig(channels=1), ModelConfig(channels=3)
    bgra = np.zeros((20, 60, 4), np.uint8)
    bgra[..., 2] = 255  # red, fully transparent: the alpha channel is dropped, not blended
    assert to_model_input(bgra, colour).shape == (32, 100, 3) and to_model_input(bgra, colour)[..., 2].min() == 255
    assert to_model_input(bgra, gray).shape == (32, 100, 1)
    assert to_model_input(np.zeros((20, 60), np.uint8), colour).shape == (32, 100, 3)
    assert to_model_input(np.zeros((20, 60, 1), np.uint8), gray).shape == (32, 100, 1)
    for shape in ((20, 60, 2), (60,), (2, 20, 60, 3)):
        with pytest.raises(ValueError, match="grayscale, BGR or BGRA"):
            to_model_input(np.zeros(shape, np.uint8), gray)
