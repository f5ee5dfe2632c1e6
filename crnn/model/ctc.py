"""CTC loss and best-path decoding; the blank is the last class, as in ``Charset``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from crnn.charset import Charset


def ctc_loss(labels: tf.Tensor, label_length: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-sample CTC loss. labels (B, L) int, padded past ``label_length`` (B,); logits (B, T, num_classes).

    TensorFlow's CTCLoss kernel on a sparse copy of the labels, not ``tf.nn.ctc_loss`` on the dense ones: given
    dense labels that one runs a graph of small TensorFlow ops over the time steps, many times slower on a CPU
    (docs/performance.md, the training step). The kernel's blank is the last class already, as here. A label
    longer than the time steps can align costs 0 and has no gradient (conversion drops those from training
    data, ``crnn.data.shards``) instead of the kernel's default, an error that would stop the run."""
    labels = tf.cast(labels, tf.int32)
    positions = tf.where(tf.sequence_mask(label_length, tf.shape(labels)[1]))
    sparse = tf.SparseTensor(positions, tf.gather_nd(labels, positions), tf.shape(labels, out_type=tf.int64))
    batch, time_steps = tf.shape(logits)[0], tf.shape(logits)[1]
    return tf.compat.v1.nn.ctc_loss(sparse, tf.cast(logits, tf.float32), tf.fill([batch], time_steps),
                                    time_major=False, ignore_longer_outputs_than_inputs=True)


def greedy_decode(logits: np.ndarray, charset: Charset) -> list[str]:
    """Best path: argmax per time step, merge repeats, drop blanks. logits (B, T, C) -> B strings."""
    best = np.asarray(logits).argmax(axis=-1)
    texts = []
    for row in best:
        keep = np.ones_like(row, dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        texts.append(charset.decode(row[keep & (row != charset.blank)]))
    return texts
