"""Reading converted data back: the manifest, and tf.data batches from the shards.

The record schema and the label policy are documented in ``crnn.data.shards``, which writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from crnn.config import ModelConfig
from crnn.data.shards import manifest_sha256, read_manifest  # noqa: F401 - re-exported


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

    Several folders (training on several sets) are read as one. Training: each input pipeline (one per
    worker; ``input_context`` from ``distribute_datasets_from_function``, which then hands successive batches
    to the worker's replicas) reads its own part of the data; shuffled, repeated forever, parsed in parallel,
    prefetched, in fixed-shape batches (static shapes for NPUs). Evaluation: every sample once, in order, the
    last batch possibly short.
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
        pipelines = input_context.num_input_pipelines if input_context else 1
        pipeline = input_context.input_pipeline_id if input_context else 0
        # Each worker's pipeline reads its own part: whole shards when there are enough to go round, else
        # every n-th record (all workers then read all files, but train on disjoint samples).
        by_file = len(files) >= pipelines
        if by_file:
            dataset = dataset.shard(pipelines, pipeline)
        # Record-level sharding needs every worker to see the records in one and the same order, so that each
        # keeps the same part every epoch; by file, the order of a worker's own files changes each epoch.
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=by_file)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=not by_file)
        if not by_file:
            dataset = dataset.shard(pipelines, pipeline)
        dataset = dataset.repeat()
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
    return without_tuning_thread(dataset.prefetch(tf.data.AUTOTUNE))


def without_tuning_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuning off, so that freeing its iterator does not wait up to a minute.

    The autotuning thread sleeps between tunings, up to 60 s apart (``Model::OptimizeLoop``,
    ``kOptimizationPeriodMaxMs``: tensorflow/core/framework/model.cc @ 2a73ba52, model.h @ eef8d5d3).
    Freeing the iterator wakes it through a cancellation callback and then waits for it
    (``RootDataset::Iterator``, tensorflow/core/data/root_dataset.cc @ f4cfddce), but
    ``CancellationManager::StartCancel`` marks itself cancelled only after its callbacks have run
    (tensorflow/core/framework/cancellation.cc @ 044ee2ac): a thread that wakes first sees no cancellation
    and sleeps out its period. Untuned, an AUTOTUNE parallelism stays at its starting value, the cores' count
    up to 16 (``GetAutotuneDefaultParallelism``, tensorflow/core/data/dataset_utils.cc @ 434c363a), and
    prefetch still sizes its own buffer. docs/performance.md has the waits this removed.
    """
    options = tf.data.Options()
    if hasattr(options, "autotune"):
        options.autotune.enabled = False
    else:  # TensorFlow 2.6, the Ascend images': the switch moved to ``Options.autotune`` in 2.7
        options.experimental_optimization.autotune = False
    return dataset.with_options(options)
