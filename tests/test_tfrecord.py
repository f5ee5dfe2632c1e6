import json
from collections import Counter

import numpy as np
import pytest

from crnn.config import ModelConfig
from crnn.data.readers import Sample
from crnn.data.tfrecord import make_dataset, read_manifest, write_shards


def _samples(labels):
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        yield Sample(rng.integers(0, 255, (30, 80, 3), dtype=np.uint8), label, f"img{i}")


def test_label_policy_and_manifest(tmp_path):
    labels = ["Hello", "a-b", "", "!!!", "x" * 26, "ok"]
    skipped = Counter(undecodable_image=2)
    manifest = write_shards(_samples(labels), tmp_path, ModelConfig(), skipped, shard_size=2)
    assert manifest["num_samples"] == 3
    assert [s["count"] for s in manifest["shards"]] == [2, 1]
    assert manifest["skipped"] == {"empty_label": 2, "label_too_long": 1, "undecodable_image": 2}
    assert manifest["labels_normalised"] == 2
    assert manifest["schema_version"] == 1 and manifest["charset"] == ModelConfig().charset
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert not list(tmp_path.glob(".*tmp*"))


def test_dataset_round_trip(tmp_path):
    model = ModelConfig()
    write_shards(_samples(["Hello", "a-b", "ok"]), tmp_path, model, Counter(), shard_size=2)
    features, texts = next(iter(make_dataset(tmp_path, model, batch_size=8, training=False)))
    assert features["image"].shape == (3, 32, 100, 1)
    assert features["label"].shape == (3, 5)  # evaluation pads to the batch's longest label
    assert features["label_length"].numpy().tolist() == [5, 2, 2]
    assert features["label"].numpy()[0, :5].tolist() == [17, 14, 21, 21, 24]  # "hello"
    assert [t.decode() for t in texts.numpy()] == ["Hello", "a-b", "ok"]


def test_training_batches_have_a_fixed_shape(tmp_path):
    model = ModelConfig()
    write_shards(_samples(["ab"] * 5), tmp_path, model, Counter(), shard_size=2)
    batches = make_dataset(tmp_path, model, batch_size=4, training=True).take(3)
    assert [(f["image"].shape[0], f["label"].shape[1]) for f, _ in batches] == [(4, model.max_label_length)] * 3


def test_incompatible_model_is_a_clear_error(tmp_path):
    write_shards(_samples(["ab"]), tmp_path, ModelConfig(), Counter())
    with pytest.raises(ValueError, match="convert the data again"):
        make_dataset(tmp_path, ModelConfig(charset="abc"), batch_size=1, training=False)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_manifest(tmp_path / "elsewhere")


def test_empty_data_and_longer_labels_are_clear_errors(tmp_path):
    write_shards(_samples(["", "!!"]), tmp_path / "empty", ModelConfig(), Counter())
    with pytest.raises(ValueError, match="no samples to read"):
        make_dataset(tmp_path / "empty", ModelConfig(), batch_size=2, training=True)
    write_shards(_samples(["ab"]), tmp_path / "long", ModelConfig(max_label_length=26), Counter())
    with pytest.raises(ValueError, match="labels may be 26 long, over the model's 25"):
        make_dataset(tmp_path / "long", ModelConfig(), batch_size=1, training=False)


def test_converting_again_leaves_no_stale_shards(tmp_path):
    write_shards(_samples(["ab"] * 5), tmp_path, ModelConfig(), Counter(), shard_size=2)
    assert len(list(tmp_path.glob("shard-*"))) == 3
    write_shards(_samples(["ab"] * 2), tmp_path, ModelConfig(), Counter(), shard_size=2)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.tfrecord"]
