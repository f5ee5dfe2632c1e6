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
``label_too_long``), as the evaluation protocol filters them, except in a split marked ``unfiltered``
(IC15_2077, CUTE80: benchmarks defined on every word; never train on one). A split may first apply its
benchmark's subset rule to the label as written: ``alnum`` drops words with characters other than letters and
digits (``filtered_not_alnum``), ``alnum_min3`` also words under 3 characters (``filtered_short``). Data for
training also drops labels CTC cannot align in the model's time steps (length plus repeated neighbours over
``time_steps``: ``label_unalignable``). The manifest's ``labels_normalised`` counts kept labels that
normalisation changed.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LabelPolicy:
    filter: str | None = None  # "alnum" or "alnum_min3"
    unfiltered: bool = False
    for_training: bool = False


def ctc_alignable(text: str, time_steps: int) -> bool:
    """CTC needs a blank between repeated characters: length + repeats must fit in the time steps."""
    repeats = sum(a == b for a, b in zip(text, text[1:], strict=False))
    return len(text) + repeats <= time_steps


def _filtered_out(label: str, rule: str | None) -> str | None:
    """The skip reason under a benchmark's subset rule, or None if the word belongs to the subset."""
    if rule is None:
        return None
    if not label.isascii() or not label.isalnum():
        return "filtered_not_alnum"
    if rule == "alnum_min3" and len(label) < 3:
        return "filtered_short"
    return None


def _keep(sample: Sample, charset: Charset, model: ModelConfig, policy: LabelPolicy, skipped: Counter,
          normalised: Counter) -> list[int] | None:
    """Class ids under the label policy, or None when the sample is dropped."""
    reason = _filtered_out(sample.label, policy.filter)
    text = charset.normalize(sample.label)
    if reason is None and not policy.unfiltered:
        if not text:
            reason = "empty_label"
        elif len(text) > model.max_label_length:
            reason = "label_too_long"
        elif policy.for_training and not ctc_alignable(text, model.time_steps):
            reason = "label_unalignable"
    if reason:
        skipped[reason] += 1
        return None
    if text != sample.label:
        normalised["labels"] += 1
    return charset.encode(text)


def write_shards(samples: Iterable[Sample], out_dir: Path, model: ModelConfig, skipped: Counter,
                 shard_size: int = 10_000, inputs: dict[str, Any] | None = None,
                 policy: LabelPolicy | None = None) -> dict[str, Any]:
    """Writes ``out_dir/shard-NNNNN.tfrecord`` files and ``manifest.json``; returns the manifest.

    ``skipped`` arrives with the reader's counts and leaves with the label policy's added.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charset = Charset(model.charset)
    policy = policy or LabelPolicy()
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
        ids = _keep(sample, charset, model, policy, skipped, normalised)
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
        "label_policy": dataclasses.asdict(policy),
        "inputs": inputs or {},
    }
    write_json(out_dir / MANIFEST, manifest)
    # Shards of an earlier, larger conversion into the same folder are not part of this one.
    for stale in set(out_dir.glob("shard-*.tfrecord")) - {out_dir / shard["file"] for shard in shards}:
        stale.unlink()
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
    if manifest["max_label_length"] > model.max_label_length:
        raise ValueError(f"{where}: labels may be {manifest['max_label_length']} long, over the model's "
                         f"{model.max_label_length}; convert the data again for this model")
    if (image["height"], image["width"], image["channels"]) != expected or manifest["charset"] != model.charset:
        raise ValueError(f"{where}: shards hold {image['height']}x{image['width']}x{image['channels']} images "
                         f"over charset {manifest['charset']!r}; the model expects {expected} over "
                         f"{model.charset!r}; convert the data again for this model")


def make_dataset(data_dirs: Path | Sequence[Path], model: ModelConfig, batch_size: int, training: bool,
                 seed: int = 0, shuffle_buffer: int = 10_000,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of ``({"image": uint8[B,H,W,C], "label": int64[B,L], "label_length": int64[B]}, text)``.

    Several folders (training on several sets) are read as one. Training: shards split across input
    pipelines, shuffled, repeated forever, fixed-shape batches (static shapes for NPUs). Evaluation: every
    sample once, in order, the last batch possibly short.
    """
    folders = [Path(data_dirs)] if isinstance(data_dirs, (str, Path)) else [Path(d) for d in data_dirs]
    files, total = [], 0
    for data_dir in folders:
        manifest = read_manifest(data_dir)
        check_compatible(manifest, model, data_dir)
        files += [str(data_dir / shard["file"]) for shard in manifest["shards"] if shard["count"]]
        total += manifest["num_samples"]
    if total == 0:
        raise ValueError(f"{', '.join(map(str, folders))}: no samples to read (see the manifests' 'skipped')")
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
    # Training batches have static shapes (labels padded to max_label_length); evaluation pads per batch,
    # so that unfiltered benchmarks may hold longer labels.
    label_shape = [model.max_label_length] if training else [None]
    dataset = dataset.padded_batch(batch_size, padded_shapes=({"image": shape, "label": label_shape,
                                                               "label_length": []}, []),
                                   drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)
