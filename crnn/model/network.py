"""The CRNN of Shi, Bai and Yao (2015): VGG-style CNN, two bidirectional LSTMs, a linear layer for CTC.

Shapes for the 32 x 100 input (H x W), filters ``f0..f6`` from ``ModelConfig.conv_filters``::

    input                      32 x 100 x C   uint8, scaled to [-1, 1] inside the model
    conv f0, pool 2x2          16 x  50 x f0
    conv f1, pool 2x2           8 x  25 x f1
    conv f2, conv f3, pool      4 x  26 x f3  (pool 2x2, stride 2x1, one column of padding each side)
    conv f4, conv f5, pool      2 x  27 x f5  (likewise)
    conv f6 2x2 valid           1 x  26 x f6  -> 26 time steps along the width
    2 x BiLSTM                      26 x 2*lstm_units
    dense                           26 x num_classes (logits; blank = last class)
"""

from __future__ import annotations

import keras
from keras import layers

from crnn.config import ModelConfig


def _conv(x, filters: int, kernel: int = 3, padding: str = "same", name: str = ""):
    x = layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    # Synchronised: under data parallelism the statistics are those of the global batch, so N replicas train
    # the same network as one device with the same global batch (a no-op on one device).
    x = layers.BatchNormalization(synchronized=True, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _pool_keep_width(x, name: str):
    """Halves the height and keeps the width (+1), giving the sequence more time steps."""
    x = layers.ZeroPadding2D(((0, 0), (1, 1)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 1), name=name)(x)


def build_crnn(config: ModelConfig) -> keras.Model:
    """uint8 images (B, 32, 100, C) -> logits (B, 26, num_classes)."""
    f = config.conv_filters
    images = keras.Input((config.height, config.width, config.channels), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(images)
    x = _conv(x, f[0], name="c0")
    x = layers.MaxPooling2D(2, name="p0")(x)
    x = _conv(x, f[1], name="c1")
    x = layers.MaxPooling2D(2, name="p1")(x)
    x = _conv(x, f[2], name="c2")
    x = _conv(x, f[3], name="c3")
    x = _pool_keep_width(x, "p2")
    x = _conv(x, f[4], name="c4")
    x = _conv(x, f[5], name="c5")
    x = _pool_keep_width(x, "p3")
    x = _conv(x, f[6], kernel=2, padding="valid", name="c6")
    x = layers.Reshape((config.time_steps, f[6]), name="to_sequence")(x)
    for i in range(2):
        x = layers.Bidirectional(layers.LSTM(config.lstm_units, return_sequences=True), name=f"bilstm{i}")(x)
    # Float32 logits under a mixed-precision policy too: CTC's log-sums need the range.
    logits = layers.Dense(config.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name="crnn")
