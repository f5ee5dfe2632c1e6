"""Evaluates a model on converted benchmark shards: the one evaluation function of the project.

Training validation, the evaluate step and the tests all call ``evaluate_dataset`` so their numbers agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from crnn.charset import Charset
from crnn.config import ModelConfig
from crnn.data.tfrecord import make_dataset
from crnn.evaluate.metrics import Score, score
from crnn.model.ctc import greedy_decode


@dataclass(frozen=True)
class Prediction:
    ground_truth: str
    prediction: str


@dataclass(frozen=True)
class BenchmarkResult:
    score: Score
    images_per_sec: float
    predictions: list[Prediction] = field(repr=False)


def evaluate_dataset(model: keras.Model, data_dir: Path, config: ModelConfig,
                     batch_size: int = 256) -> BenchmarkResult:
    """Batched greedy-decoding inference over every sample of ``data_dir``."""
    charset = Charset(config.charset)
    ground_truths: list[str] = []
    predictions: list[str] = []
    started = time.perf_counter()
    for features, texts in make_dataset(data_dir, config, batch_size, training=False):
        logits = model(features["image"], training=False)
        predictions.extend(greedy_decode(logits.numpy(), charset))
        ground_truths.extend(t.decode("utf-8") for t in texts.numpy())
    seconds = time.perf_counter() - started
    return BenchmarkResult(
        score=score(ground_truths, predictions, charset),
        images_per_sec=len(predictions) / seconds if seconds else 0.0,
        predictions=[Prediction(g, p) for g, p in zip(ground_truths, predictions, strict=True)],
    )
