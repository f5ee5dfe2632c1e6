"""Evaluates a model on converted benchmark shards: the one evaluation function of the project.

Training validation, the evaluate step and the tests all call ``evaluate_dataset`` so their numbers agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crnn.charset import Charset
from crnn.config import ModelConfig
from crnn.data.input_pipeline import make_dataset
from crnn.evaluate.metrics import Score, score
from crnn.keras_compat import keras
from crnn.model.ctc import ctc_loss, greedy_decode


@dataclass(frozen=True)
class Prediction:
    ground_truth: str
    prediction: str


@dataclass(frozen=True)
class Example:
    """One sample kept for the picture of predictions: the model's input image and what it read."""

    image: np.ndarray
    ground_truth: str
    prediction: str
    correct: bool


@dataclass(frozen=True)
class BenchmarkResult:
    score: Score
    images_per_sec: float
    predictions: list[Prediction] = field(repr=False)
    examples: list[Example] = field(default_factory=list, repr=False)  # the first right and wrong ones
    loss: float | None = None  # the mean CTC loss per sample, where asked for


def evaluate_dataset(model: keras.Model, data_dir: Path, config: ModelConfig, batch_size: int = 256,
                     examples_per_kind: int = 8, with_loss: bool = False) -> BenchmarkResult:
    """Batched greedy-decoding inference over every sample of ``data_dir``; keeps the first
    ``examples_per_kind`` right and wrong samples with their images. ``with_loss``: the mean CTC loss too,
    for a split whose labels CTC can take (a training-style split, not an unfiltered benchmark)."""
    charset = Charset(config.charset)
    ground_truths: list[str] = []
    predictions: list[str] = []
    right: list[Example] = []
    wrong: list[Example] = []
    losses: list[np.ndarray] = []
    started = time.perf_counter()
    for features, texts in make_dataset(data_dir, config, batch_size, training=False):
        logits = model(features["image"], training=False)
        if with_loss:
            losses.append(ctc_loss(features["label"], features["label_length"], logits).numpy())
        batch = greedy_decode(logits.numpy(), charset)
        truths = [t.decode("utf-8") for t in texts.numpy()]
        if len(right) < examples_per_kind or len(wrong) < examples_per_kind:
            for image, truth, read in zip(features["image"].numpy(), truths, batch):
                correct = charset.normalize(truth) == charset.normalize(read)
                kept = right if correct else wrong
                if len(kept) < examples_per_kind:
                    kept.append(Example(image, truth, read, correct))
        predictions.extend(batch)
        ground_truths.extend(truths)
    seconds = time.perf_counter() - started
    return BenchmarkResult(
        score=score(ground_truths, predictions, charset),
        images_per_sec=len(predictions) / seconds if seconds else 0.0,
        predictions=[Prediction(g, p) for g, p in zip(ground_truths, predictions)],
        examples=right + wrong,
        loss=float(np.concatenate(losses).mean()) if losses else None,
    )
