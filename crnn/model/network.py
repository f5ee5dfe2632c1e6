"""The CRNN of Shi, Bai and Yao (2015): VGG-style CNN, two bidirectional LSTMs, a linear layer for CTC.

Shapes for the 32 x 100 input (H x W), filters ``f0..f6`` from ``ModelConfig.conv_filters``::

    input                      32 x 100 x C   uint8, scaled to [-1, 1] (and standardised per image where
                                              ``ModelConfig.standardise``)
    conv f0, pool 2x2          16 x  50 x f0
    conv f1, pool 2x2           8 x  25 x f1
    conv f2, conv f3, pool      4 x  26 x f3  (pool 2x2, stride 2x1, one column of padding each side)
    conv f4, conv f5, pool      2 x  27 x f5  (likewise)
    conv f6 2x2 valid           1 x  26 x f6  -> 26 time steps along the width
    2 x BiLSTM                      26 x 2*lstm_units
    dense                           26 x num_classes (logits; blank = last class)
"""

from __future__ import annotations

from functools import partial

import tensorflow as tf

from crnn.config import ModelConfig
from crnn.keras_compat import MomentsBatchNormalization, keras, register_serializable

layers = keras.layers


def global_moments(x: tf.Tensor, axes: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance over ``axes`` of the global batch: each replica's sums of ``x`` and of its squares,
    and its count, summed over the replicas in one all-reduce (Keras' ``synchronized=True`` makes three)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: this replica's batch is the batch
        return tf.nn.moments(x, axes)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    total, squares, count = context.all_reduce(
        tf.distribute.ReduceOp.SUM, [tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), count])
    mean = tf.math.divide_no_nan(total, count)
    return mean, tf.maximum(tf.math.divide_no_nan(squares, count) - tf.square(mean), 0.0)  # E(x^2) - E(x)^2


@register_serializable
class GlobalBatchNormalization(MomentsBatchNormalization):
    """Batch normalisation whose training statistics are those of the global batch, so that N replicas train
    the same network as one device with the same global batch (the same as one device on one device).

    Keras' ``BatchNormalization(synchronized=True)`` computes the same with three all-reduces a layer. Under
    ``MirroredStrategy`` each all-reduce, as the step is traced, walks the graph of every replica (for the
    variables its gradient may need) when it is made and again when its gradient is, so tracing the first step
    takes longer with every all-reduce and every replica: one a layer, not three, is what keeps it short."""

    def batch_moments(self, inputs: tf.Tensor, axes: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
        return global_moments(inputs, axes)

    def own_batch_moments(self) -> bool:
        """One replica in sync: its batch is the global batch."""
        context = tf.distribute.get_replica_context()
        return context is None or context.num_replicas_in_sync == 1


def _conv(x, filters: int, kernel: int = 3, padding: str = "same", name: str = "", global_statistics: bool = True):
    x = layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    norm = GlobalBatchNormalization if global_statistics else layers.BatchNormalization
    x = norm(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _pool_keep_width(x, name: str):
    """Halves the height and keeps the width (+1), giving the sequence more time steps."""
    x = layers.ZeroPadding2D(((0, 0), (1, 1)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 1), name=name)(x)


def build_crnn(config: ModelConfig, for_training: bool = True, unroll: bool = False) -> keras.Model:
    """uint8 images (B, 32, 100, C) -> logits (B, 26, num_classes). A model to train normalises with the
    statistics of the global batch (``GlobalBatchNormalization``); one only to serve has Keras' own layers,
    the same weights, and loads without this package. ``unroll``: the LSTMs as one graph op per time step
    rather than a loop, the same weights and results: faster on CPUs, where a GPU's cuDNN kernel needs the
    loop (``training_unroll``)."""
    f = config.conv_filters
    conv = partial(_conv, global_statistics=for_training)
    images = keras.Input((config.height, config.width, config.channels), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(images)
    if config.standardise:
        # Each image to zero mean and unit variance, so that a faint or low-contrast word reaches the first
        # convolution as strongly as a crisp one. The scaling before it keeps the normalisation's epsilon
        # small next to a real image's variance.
        x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, name="standardise")(x)
    x = conv(x, f[0], name="c0")
    x = layers.MaxPooling2D(2, name="p0")(x)
    x = conv(x, f[1], name="c1")
    x = layers.MaxPooling2D(2, name="p1")(x)
    x = conv(x, f[2], name="c2")
    x = conv(x, f[3], name="c3")
    x = _pool_keep_width(x, "p2")
    x = conv(x, f[4], name="c4")
    x = conv(x, f[5], name="c5")
    x = _pool_keep_width(x, "p3")
    x = conv(x, f[6], kernel=2, padding="valid", name="c6")
    x = layers.Reshape((config.time_steps, f[6]), name="to_sequence")(x)
    for i in range(2):
        lstm = layers.LSTM(config.lstm_units, return_sequences=True, unroll=unroll)
        x = layers.Bidirectional(lstm, name=f"bilstm{i}")(x)
    # Float32 logits under a mixed-precision policy too: CTC's log-sums need the range.
    logits = layers.Dense(config.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name="crnn")


def training_unroll(device: str) -> bool:
    """Whether a model trained on ``device`` unrolls its LSTMs: on CPUs, where the loop's own ops cost more than
    the steps (``make bench-train``'s step variants); GPUs fuse the loop in cuDNN, NPUs compile it."""
    return device == "cpu"
