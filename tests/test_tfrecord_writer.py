"""TFRecord files written without TensorFlow: TensorFlow reads back what ``RecordWriter`` wrote."""

import pytest
import tensorflow as tf

from crnn.data.tfrecord_writer import RecordWriter, encode_example
from crnn.files import sha256_of


def test_records_written_in_chunks_read_back_with_tensorflow(tmp_path):
    # About 330 KB in all: the writer flushes every 64 KiB, so records straddle its chunks.
    records = [encode_example({"image": bytes([i % 256]) * (3000 + i), "label": [i % 37, 1],
                               "text": f"word{i}".encode()}) for i in range(100)]
    path = tmp_path / "shard.tfrecord"
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert writer.sha256 == sha256_of(path)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    example = tf.train.Example.FromString(records[7]).features.feature
    assert example["image"].bytes_list.value == [bytes([7]) * 3007]
    assert list(example["label"].int64_list.value) == [7, 1]
    assert example["text"].bytes_list.value == [b"word7"]


def test_integers_of_any_size_are_encoded_as_varints():
    values = [0, 1, 127, 128, 255, 256, 300, 2**40]
    example = tf.train.Example.FromString(encode_example({"ids": values, "empty": []})).features.feature
    assert list(example["ids"].int64_list.value) == values
    assert list(example["empty"].int64_list.value) == []


def test_negative_integers_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        encode_example({"ids": [3, -1]})


def test_an_empty_file_is_a_valid_shard(tmp_path):
    with RecordWriter(tmp_path / "empty.tfrecord") as writer:
        pass
    assert (tmp_path / "empty.tfrecord").read_bytes() == b""
    assert writer.sha256 == sha256_of(tmp_path / "empty.tfrecord")


def test_arrays_and_iterables_of_ints_are_encoded_by_value():
    import numpy as np

    cases = [(np.array([3, 4]), [3, 4]), (np.array([300], dtype=np.int32), [300]), (range(3), [0, 1, 2]),
             ((v for v in [1, 300]), [1, 300])]
    for values, expected in cases:
        feature = tf.train.Example.FromString(encode_example({"ids": values})).features.feature["ids"]
        assert list(feature.int64_list.value) == expected


def test_ids_given_as_bytes_are_encoded_as_integers():
    from crnn.data.tfrecord_writer import example_of, int64_feature

    for ids in (b"\x00\x05\x7f", bytes([1, 128, 255])):  # one-byte varints as they are, the rest encoded
        feature = tf.train.Example.FromString(example_of([int64_feature("ids", ids)])).features.feature["ids"]
        assert list(feature.int64_list.value) == list(ids)
