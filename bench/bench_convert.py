"""Conversion and input-pipeline benchmark: every figure against a baseline or a bound measured in this run.

1. our converter (all cores) against a baseline written like the reference implementation (one process: read,
   resize, build a ``tf.train.Example``, write with TensorFlow);
2. our converter against the bound: decode + resize alone from bytes in memory, on every core at once (each
   core's rate with all of them busy, times the cores); the one-core rate times the cores is shown beside it.
   For context, two more rates on all cores: read + decode + resize, and the least any TFRecord converter
   must do (read, decode, resize, frame with CRC32C, hash with SHA-256, write), which tells our own overhead
   apart from the work itself;
3. the tf.data reader against what a training step of the ``quick`` preset consumes.

Every rate is the best of ``--runs`` rounds, and each round measures every rate once, in turn: this machine is
shared and noisy, and a slow spell then falls on all of them alike rather than on whichever was measured
during it. The rendered images are flushed to disk before anything is timed: their write-back would otherwise
run during the first measures. The converter's first run, which also starts its fork server, is shown beside
its best.

Usage: python bench/bench_convert.py [--images 100000] [--runs 3] [--out outputs/bench]
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
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from crnn.config import PRESETS, ModelConfig  # noqa: E402
from crnn.data.convert import convert_split, default_workers  # noqa: E402
from crnn.data.readers import open_source, read_capped  # noqa: E402
from crnn.data.shards import LabelPolicy  # noqa: E402
from crnn.data.synthetic import SyntheticSpec, mjsynth_members  # noqa: E402
from crnn.preprocess import to_model_input  # noqa: E402

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


def _read(path: str) -> bytes:
    return read_capped(path, 1 << 20)  # what the converter reads with: three system calls, no open()


def _decode_resize(blob: bytes, model: ModelConfig) -> np.ndarray:
    """The converter's decode and resize, nothing else: ``to_model_input`` shrinks with INTER_AREA and
    enlarges with INTER_LINEAR, as the model's input contract says."""
    return to_model_input(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_GRAYSCALE), model)


def _decode_resize_rate(paths: list[str], model: ModelConfig, kind: str, barrier=None) -> float:
    """Images/s on one core of ``kind``: "decode" (decode + resize from bytes in memory), "read" (read the
    file, decode, resize) or "essential" (read, decode, resize, frame, hash, write: the least a converter
    does)."""
    cv2.setNumThreads(1)
    blobs = [Path(p).read_bytes() for p in paths] if kind == "decode" else paths
    if barrier is not None:
        barrier.wait()  # every core starts together: the bound is measured with all of them busy
    started = time.perf_counter()
    if kind == "essential":
        _essential(paths, model)
    else:
        for blob in blobs:
            _decode_resize(_read(blob) if kind == "read" else blob, model)
    return len(paths) / (time.perf_counter() - started)


def _essential(paths: list[str], model: ModelConfig) -> None:
    """Each image read, decoded, resized and its raw pixels written as a record by ``RecordWriter`` (CRC32C
    framing, SHA-256, 64 KiB writes): what any converter writing checksummed shards must do, without any of
    the converter's own work per sample (label policy, the record's other fields, the header check)."""
    from crnn.data.tfrecord_writer import RecordWriter

    with tempfile.TemporaryDirectory(dir=Path(paths[0]).parent) as out, RecordWriter(Path(out) / "x") as writer:
        for path in paths:
            writer.write(_decode_resize(_read(path), model).tobytes())


def _part_rate(args: tuple) -> float:
    return _decode_resize_rate(*args)


def all_cores_rate(paths: list[str], model: ModelConfig, cores: int, kind: str = "decode") -> float:
    """Images/s of ``kind`` (``_decode_resize_rate``) on all ``cores`` at once, each doing its share of the
    images: the machine's bound (one core's rate times the cores would assume perfect scaling, which two
    vCPUs sharing a physical core would not give)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(cores)
        with context.Pool(cores) as pool:
            rates = pool.map(_part_rate, [(paths[i::cores], model, kind, barrier) for i in range(cores)])
    return sum(rates)


def interleaved(runs: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each measure's rates over ``runs`` rounds; every round takes each measure once, in turn."""
    rates: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(runs):
        for name, measure in measures.items():
            rates[name].append(measure())
    return rates


def our_rate(index: Path, out: Path, model: ModelConfig, cores: int) -> float:
    """Images/s of our converter on every core, into an empty folder."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the previous run's deletion is not left to the kernel to do during this one
    started = time.perf_counter()
    manifest = convert_split("mjsynth", index, out, model, workers=cores, policy=LabelPolicy(for_training=True))
    return manifest["num_samples"] / (time.perf_counter() - started)


def reader_rate(data: Path, model: ModelConfig, batch_size: int, batches: int) -> float:
    from crnn.data.input_pipeline import make_dataset

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
    parser.add_argument("--runs", type=int, default=3, help="each rate is the best of this many runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    model = PRESETS["quick"].model
    cores = default_workers()
    work = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        print(f"rendering {args.images} images in the MJSynth layout...", flush=True)
        index = make_mjsynth(work / "mjsynth", args.images)
        os.sync()
        paths = [str(index.parent / e.image) for e in open_source("mjsynth", index).entries(Counter())]

        def baseline_rate() -> float:
            started = time.perf_counter()
            written = baseline_convert(index, work / "baseline.tfrecord", model)
            return written / (time.perf_counter() - started)

        rates = interleaved(args.runs, {
            "ours": lambda: our_rate(index, work / "ours", model, cores),
            "baseline": baseline_rate,
            "per_core": lambda: _decode_resize_rate(paths, model, "decode"),
            **{kind: lambda k=kind: all_cores_rate(paths, model, cores, k) for kind in ("decode", "read", "essential")},
        })
        ours, ours_first = max(rates["ours"]), rates["ours"][0]
        baseline, per_core, bound, with_reads, essential = (
            max(rates[name]) for name in ("baseline", "per_core", "decode", "read", "essential"))
        reader = reader_rate(work / "ours", model, batch_size=64, batches=200)
        training = training_rate(work / "ours", steps=40)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "images": args.images, "cores": cores, "runs": args.runs,
        "ours_images_per_sec": ours, "ours_first_run_images_per_sec": ours_first,
        "baseline_images_per_sec": baseline, "vs_baseline": ours / baseline,
        "decode_resize_one_core_alone": per_core, "linear_scaling": per_core * cores,
        "of_linear_scaling": ours / (per_core * cores),
        "bound_images_per_sec": bound, "of_bound": ours / bound,
        "read_decode_resize_all_cores": with_reads, "of_read_bound": ours / with_reads,
        "essential_work_all_cores": essential, "of_essential": ours / essential,
        "reader_images_per_sec": reader, "training_images_per_sec": training,
        "reader_vs_training": reader / training,
        "rounds": rates,  # every rate of every round, images/s
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convert.json").write_text(json.dumps(figures, indent=2) + "\n")
    rows = [
        ("conversion, ours (images/s)", f"{ours:.0f}", ""),
        ("  its first run (starts the fork server)", f"{ours_first:.0f}", ""),
        ("conversion, reference-style baseline", f"{baseline:.0f}", ""),
        ("  ours / baseline", f"{ours / baseline:.2f}x", f"{TARGETS['vs_baseline']:.1f}x"),
        ("decode + resize, one core alone (images/s)", f"{per_core:.0f}", ""),
        (f"  that x {cores} cores, if cores scaled linearly", f"{per_core * cores:.0f}", ""),
        ("  ours / that", f"{100 * ours / (per_core * cores):.0f}%", ""),
        (f"bound: decode + resize, {cores} cores at once", f"{bound:.0f}", ""),
        ("  ours / bound", f"{100 * ours / bound:.0f}%", f"{100 * TARGETS['of_bound']:.0f}%"),
        ("  (context) read + decode + resize, all cores", f"{with_reads:.0f}", ""),
        ("  ours / that", f"{100 * ours / with_reads:.0f}%", ""),
        ("  (context) the least a converter does, all cores", f"{essential:.0f}", ""),
        ("  ours / that", f"{100 * ours / essential:.0f}%", ""),
        ("tf.data reader (images/s)", f"{reader:.0f}", ""),
        ("training step consumption, quick preset", f"{training:.0f}", ""),
        ("  reader / training", f"{reader / training:.1f}x", f"{TARGETS['reader_vs_training']:.1f}x"),
    ]
    print(f"\n{'figure':<50} {'value':>10} {'target':>8}")
    for name, value, target in rows:
        print(f"{name:<50} {value:>10} {target:>8}")
    print(f"\nwritten to {args.out / 'convert.json'}")


if __name__ == "__main__":
    main()
