"""TFRecord shards plus ``manifest.json``: writing them, and reading them back with tf.data.

Record schema (``schema_version`` 1), one ``tf.train.Example`` per word:

=============  =======  ==============================================================================
key            type     meaning
=============  =======  ==============================================================================
image          bytes    the preprocessed image, raw uint8, shape (height, width, channels) in the manifest
label          int64[]  class ids of the normalised label (charset in the manifest, blank = len(charset))
label_length   int64    number of ids
text           bytes    the ground truth as the dataset wrote it (UTF-8), for reports
source_id      bytes    where the sample came from (file name, or image name and box index)
=============  =======  ==============================================================================

Label policy: a label is normalised (lowercased, characters outside the charset removed) and kept; the
ones that become empty or longer than ``max_label_length`` are dropped and counted (``empty_label``,
``label_too_long``), as the evaluation protocol filters them; the manifest's ``labels_normalised`` counts
kept labels that normalisation changed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tensorflow as tf

from crnn.charset import Charset
from crnn.config import ModelConfig
from crnn.data.files import atomic_path, sha256_of, write_json
from crnn.data.readers import Sample
from crnn.preprocess import to_model_input

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def _example(sample: Sample, ids: list[int], pixels: bytes) -> bytes:
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
        "label_length": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(ids)])),
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sample.label.encode("utf-8")])),
        "source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sample.source_id.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _keep(sample: Sample, charset: Charset, model: ModelConfig, skipped: Counter,
          normalised: Counter) -> list[int] | None:
    """Class ids under the label policy, or None when the sample is dropped."""
    text = charset.normalize(sample.label)
    if not text:
        skipped["empty_label"] += 1
        return None
    if len(text) > model.max_label_length:
        skipped["label_too_long"] += 1
        return None
    if text != sample.label:
        normalised["labels"] += 1
    return charset.encode(text)


def write_shards(samples: Iterable[Sample], out_dir: Path, model: ModelConfig, skipped: Counter,
                 shard_size: int = 10_000, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes ``out_dir/shard-NNNNN.tfrecord`` files and ``manifest.json``; returns the manifest.

    ``skipped`` arrives with the reader's counts and leaves with the label policy's added.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charset = Charset(model.charset)
    shards: list[dict[str, Any]] = []
    buffer: list[bytes] = []
    normalised: Counter = Counter()

    def flush() -> None:
        path = out_dir / f"shard-{len(shards):05d}.tfrecord"
        with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in buffer:
                writer.write(record)
        shards.append({"file": path.name, "count": len(buffer), "sha256": sha256_of(path)})
        buffer.clear()

    for sample in samples:
        ids = _keep(sample, charset, model, skipped, normalised)
        if ids is None:
            continue
        buffer.append(_example(sample, ids, to_model_input(sample.image, model).tobytes()))
        if len(buffer) == shard_size:
            flush()
    if buffer or not shards:
        flush()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "image": {"height": model.height, "width": model.width, "channels": model.channels,
                  "encoding": "raw_uint8"},
        "charset": model.charset,
        "max_label_length": model.max_label_length,
        "num_samples": sum(shard["count"] for shard in shards),
        "shards": shards,
        "skipped": dict(sorted(skipped.items())),
        "labels_normalised": normalised["labels"],
        "inputs": inputs or {},
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; is this a converted dataset folder?")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {manifest.get('schema_version')!r}, "
                         f"this code reads {SCHEMA_VERSION}")
    return manifest


def manifest_sha256(data_dir: Path) -> str:
    """The data's identity for lineage: the digest of its manifest (which holds every shard's digest)."""
    return sha256_of(Path(data_dir) / MANIFEST)


def check_compatible(manifest: dict[str, Any], model: ModelConfig, where: Path) -> None:
    image = manifest["image"]
    expected = (model.height, model.width, model.channels)
    if (image["height"], image["width"], image["channels"]) != expected or manifest["charset"] != model.charset:
        raise ValueError(f"{where}: shards hold {image['height']}x{image['width']}x{image['channels']} images "
                         f"over charset {manifest['charset']!r}; the model expects {expected} over "
                         f"{model.charset!r}; convert the data again for this model")


def make_dataset(data_dir: Path, model: ModelConfig, batch_size: int, training: bool, seed: int = 0,
                 shuffle_buffer: int = 10_000,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of ``({"image": uint8[B,H,W,C], "label": int64[B,L], "label_length": int64[B]}, text)``.

    Training: shards split across input pipelines, shuffled, repeated forever, fixed-shape batches (static
    shapes for NPUs). Evaluation: every sample once, in order, the last batch possibly short.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    check_compatible(manifest, model, data_dir)
    files = [str(data_dir / shard["file"]) for shard in manifest["shards"]]
    shape = (model.height, model.width, model.channels)
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.VarLenFeature(tf.int64),
        "label_length": tf.io.FixedLenFeature([], tf.int64),
        "text": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(record):
        parsed = tf.io.parse_single_example(record, features)
        image = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8), shape)
        label = tf.sparse.to_dense(parsed["label"])
        label = tf.pad(label, [[0, model.max_label_length - tf.shape(label)[0]]])
        label = tf.ensure_shape(label, [model.max_label_length])
        return {"image": image, "label": label, "label_length": parsed["label_length"]}, parsed["text"]

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        if input_context and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        dataset = dataset.shuffle(len(files), seed=seed).repeat()
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    else:
        dataset = tf.data.TFRecordDataset(dataset)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)
