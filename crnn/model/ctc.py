"""CTC loss and best-path decoding; the blank is the last class, as in ``Charset``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from crnn.charset import Charset


def ctc_loss(labels: tf.Tensor, label_length: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-sample CTC loss. labels (B, L) int, label_length (B,), logits (B, T, num_classes)."""
    batch, time_steps = tf.shape(logits)[0], tf.shape(logits)[1]
    return tf.nn.ctc_loss(
        labels=tf.cast(labels, tf.int32),
        logits=tf.cast(logits, tf.float32),
        label_length=tf.cast(label_length, tf.int32),
        logit_length=tf.fill([batch], time_steps),
        logits_time_major=False,
        blank_index=-1,
    )


def greedy_decode(logits: np.ndarray, charset: Charset) -> list[str]:
    """Best path: argmax per time step, merge repeats, drop blanks. logits (B, T, C) -> B strings."""
    best = np.asarray(logits).argmax(axis=-1)
    texts = []
    for row in best:
        keep = np.ones_like(row, dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        texts.append(charset.decode(row[keep & (row != charset.blank)]))
    return texts
