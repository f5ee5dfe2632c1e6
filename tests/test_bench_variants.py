"""The step variants of ``bench/bench_step_variants.py`` that change how the network is computed must compute the
same network: a faster variant that trains something else would be no comparison."""

import numpy as np
import tensorflow as tf

from bench.bench_step_variants import _recurrent_swapped
from crnn.config import PRESETS
from crnn.model.network import build_crnn


def _loss_and_gradients(model, images):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(images, training=False)))
    return [loss.numpy()] + [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def test_the_fused_lstm_kernel_variant_gives_keras_lstms_outputs_and_gradients():
    keras_lstms = build_crnn(PRESETS["tiny"].model, unroll=True)
    fused = _recurrent_swapped(keras_lstms, "block_lstm")
    assert [type(layer).__name__ for layer in fused.layers if layer.name.startswith("bilstm")] == [
        "BlockBidirectionalLSTM", "BlockBidirectionalLSTM"]
    fused.set_weights([np.asarray(w) for w in keras_lstms.get_weights()])
    images = np.random.default_rng(2).integers(0, 256, (3, 32, 100, 1), dtype=np.uint8)
    expected, got = _loss_and_gradients(keras_lstms, images), _loss_and_gradients(fused, images)
    assert len(got) == len(expected) == 1 + len(keras_lstms.trainable_variables)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)


def test_the_one_bilstm_variant_leaves_out_only_the_second_lstm():
    full = build_crnn(PRESETS["tiny"].model, unroll=True)
    one = _recurrent_swapped(full, "one_bilstm")
    names = [layer.name for layer in full.layers]
    assert [layer.name for layer in one.layers] == [name for name in names if name != "bilstm1"]
    assert one.output_shape == full.output_shape
    assert one.count_params() == full.count_params() - full.get_layer("bilstm1").count_params()
