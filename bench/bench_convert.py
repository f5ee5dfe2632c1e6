"""Conversion and input-pipeline benchmark: every figure against a baseline or a bound measured in this run.

1. our converter (all cores) against a baseline written like the reference implementation (one process: read,
   resize, build a ``tf.train.Example``, write with TensorFlow);
2. our converter against the bound: decode + resize alone from bytes in memory, on every core at once (each
   core's rate with all of them busy, times the cores); the one-core rate times the cores is shown beside it;
3. the tf.data reader against what a training step of the ``quick`` preset consumes.

Usage: python bench/bench_convert.py [--images 100000] [--out outputs/bench]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from crnn.config import PRESETS, ModelConfig  # noqa: E402
from crnn.data.convert import convert_split, default_workers  # noqa: E402
from crnn.data.readers import list_mjsynth  # noqa: E402
from crnn.data.shards import LabelPolicy  # noqa: E402
from crnn.data.synthetic import SyntheticSpec, mjsynth_members  # noqa: E402

TARGETS = {"vs_baseline": 3.0, "of_bound": 0.70, "reader_vs_training": 5.0}


def make_mjsynth(root: Path, count: int) -> Path:
    members = mjsynth_members(SyntheticSpec(seed=1, train_size=count, val_size=1))
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / "mnt/ramdisk/max/90kDICT32px/annotation_train.txt"


def baseline_convert(index: Path, out: Path, model: ModelConfig) -> int:
    """The reference's way: one process, cv2.imread, resize, tf.train.Example, tf.io.TFRecordWriter."""
    import tensorflow as tf

    from crnn.charset import Charset

    charset = Charset(model.charset)
    written = 0
    with tf.io.TFRecordWriter(str(out)) as writer:
        for line in index.read_text().splitlines():
            rel = line.split(" ")[0]
            image = cv2.imread(str(index.parent / rel))
            if image is None:
                continue
            gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (model.width, model.height))
            label = charset.normalize(Path(rel).stem.split("_")[1])
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[gray.tobytes()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=charset.encode(label))),
                "label_length": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(label)])),
                "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode()])),
                "source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rel.encode()])),
            }))
            writer.write(example.SerializeToString())
            written += 1
    return written


def _decode_resize_rate(blobs: list[bytes] | list[str], model: ModelConfig, read_files: bool = False,
                        barrier=None) -> float:
    """Images/s of decode + resize on one core, from bytes in memory (or, ``read_files``, paths to read)."""
    cv2.setNumThreads(1)
    if barrier is not None:
        barrier.wait()  # every core starts together: the bound is measured with all of them busy
    started = time.perf_counter()
    for blob in blobs:
        if read_files:
            with open(blob, "rb") as stream:
                blob = stream.read()
        image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_GRAYSCALE)
        cv2.resize(image, (model.width, model.height), interpolation=cv2.INTER_AREA)
    return len(blobs) / (time.perf_counter() - started)


def _part_rate(args: tuple) -> float:
    paths, model, read_files, barrier = args
    blobs = paths if read_files else [Path(p).read_bytes() for p in paths]
    return _decode_resize_rate(blobs, model, read_files, barrier)


def all_cores_rate(paths: list[str], model: ModelConfig, cores: int, read_files: bool = False) -> float:
    """Images/s of decode + resize on all ``cores`` at once, each decoding its share of the images: the
    machine's bound (one core's rate times the cores would assume perfect scaling, which two vCPUs sharing a
    physical core would not give)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(cores)
        with context.Pool(cores) as pool:
            rates = pool.map(_part_rate, [(paths[i::cores], model, read_files, barrier) for i in range(cores)])
    return sum(rates)


def reader_rate(data: Path, model: ModelConfig, batch_size: int, batches: int) -> float:
    from crnn.data.tfrecord import make_dataset

    dataset = make_dataset(data, model, batch_size, training=True, shuffle_buffer=2000)
    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch_size * batches / (time.perf_counter() - started)


def training_rate(data: Path, steps: int) -> float:
    """Images/s a training step of the quick preset consumes on this machine."""
    from crnn.config import recipe_for
    from crnn.tracking import StepRun
    from crnn.train.loop import train_model

    class Rates(StepRun):
        def __init__(self):
            super().__init__()
            self.rates = []

        def log_metrics(self, metrics, step=None):
            self.rates.append(metrics["images_per_sec"])

    run = Rates()
    recipe = recipe_for("quick", steps=steps, warmup_steps=1, log_every=steps // 2, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as out:
        train_model(recipe, data, out, run=run)
    return run.rates[-1]  # the second window: after tracing and warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    model = PRESETS["quick"].model
    cores = default_workers()
    work = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        print(f"rendering {args.images} images in the MJSynth layout...", flush=True)
        index = make_mjsynth(work / "mjsynth", args.images)

        started = time.perf_counter()
        manifest = convert_split("mjsynth", index, work / "ours", model, workers=cores,
                                 policy=LabelPolicy(for_training=True))
        ours = manifest["num_samples"] / (time.perf_counter() - started)

        started = time.perf_counter()
        written = baseline_convert(index, work / "baseline.tfrecord", model)
        baseline = written / (time.perf_counter() - started)

        paths = [str(index.parent / e.image) for e in list_mjsynth(index, Counter())]
        per_core = _part_rate((paths, model, False, None))
        bound = all_cores_rate(paths, model, cores)
        with_reads = all_cores_rate(paths, model, cores, read_files=True)
        reader = reader_rate(work / "ours", model, batch_size=64, batches=200)
        training = training_rate(work / "ours", steps=40)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "images": args.images, "cores": cores,
        "ours_images_per_sec": ours, "baseline_images_per_sec": baseline, "vs_baseline": ours / baseline,
        "decode_resize_one_core_alone": per_core, "linear_scaling": per_core * cores,
        "of_linear_scaling": ours / (per_core * cores),
        "bound_images_per_sec": bound, "of_bound": ours / bound,
        "read_decode_resize_all_cores": with_reads, "of_read_bound": ours / with_reads,
        "reader_images_per_sec": reader, "training_images_per_sec": training,
        "reader_vs_training": reader / training,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convert.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{'figure':<44} {'value':>12} {'target':>8}")
    print(f"{'conversion, ours (images/s)':<44} {ours:>12.0f}")
    print(f"{'conversion, reference-style baseline':<44} {baseline:>12.0f}")
    print(f"{'  ours / baseline':<44} {ours / baseline:>11.2f}x {TARGETS['vs_baseline']:>7.1f}x")
    print(f"{'decode + resize, one core alone (images/s)':<44} {per_core:>12.0f}")
    print(f"{f'  that x {cores} cores, if cores scaled linearly':<44} {per_core * cores:>12.0f}")
    print(f"{'  ours / that':<44} {100 * ours / (per_core * cores):>11.0f}%")
    print(f"{f'bound: decode + resize, {cores} cores at once':<44} {bound:>12.0f}")
    print(f"{'  ours / bound':<44} {100 * ours / bound:>11.0f}% {100 * TARGETS['of_bound']:>7.0f}%")
    print(f"{'  (context) read + decode + resize, all cores':<44} {with_reads:>12.0f}")
    print(f"{'  ours / that':<44} {100 * ours / with_reads:>11.0f}%")
    print(f"{'tf.data reader (images/s)':<44} {reader:>12.0f}")
    print(f"{'training step consumption, quick preset':<44} {training:>12.0f}")
    print(f"{'  reader / training':<44} {reader / training:>11.1f}x {TARGETS['reader_vs_training']:>7.1f}x")
    print(f"\nwritten to {args.out / 'convert.json'}")


if __name__ == "__main__":
    main()
