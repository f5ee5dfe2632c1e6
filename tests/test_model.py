import numpy as np
import pytest
import tensorflow as tf

from crnn.config import PRESETS
from crnn.model.ctc import ctc_loss
from crnn.model.network import build_crnn

TIME_STEPS = PRESETS["paper"].model.time_steps


def test_paper_network_shape_and_size():
    model = build_crnn(PRESETS["paper"].model)
    assert model.output_shape == (None, TIME_STEPS, 37)
    # MindOCR reports 8.72 M parameters for the VGG7 CRNN.
    assert model.count_params() == pytest.approx(8.72e6, rel=0.01)


def test_forward_pass_on_uint8_images():
    model = build_crnn(PRESETS["tiny"].model)
    logits = model(np.zeros((2, 32, 100, 1), np.uint8))
    assert logits.shape == (2, TIME_STEPS, 37)


def test_the_served_model_has_keras_own_layers_and_the_trained_ones_outputs():
    from crnn.model.network import GlobalBatchNormalization

    config = PRESETS["tiny"].model
    trained, served = build_crnn(config), build_crnn(config, for_training=False)
    assert sum(isinstance(layer, GlobalBatchNormalization) for layer in trained.layers) == 7
    assert not any(isinstance(layer, GlobalBatchNormalization) for layer in served.layers)
    served.set_weights([np.asarray(w) for w in trained.get_weights()])
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 100, 1), dtype=np.uint8)
    np.testing.assert_array_equal(trained(images, training=False), served(images, training=False))


def test_global_moments_on_one_device_are_the_batch_moments():
    from crnn.model.network import global_moments

    x = tf.random.stateless_normal((4, 8, 10, 3), seed=(1, 2)) * 3 + 1
    mean, variance = global_moments(x, [0, 1, 2])
    expected_mean, expected_variance = tf.nn.moments(x, [0, 1, 2])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(variance, expected_variance, rtol=1e-4)


def test_ctc_loss_is_lower_for_the_right_label():
    # Logits that spell "ab" (a=10, b=11) with blanks in between.
    path = [10, 36, 11] + [36] * (TIME_STEPS - 3)
    logits = tf.constant(np.eye(37, dtype=np.float32)[path][None] * 20)
    right = ctc_loss(tf.constant([[10, 11, 0]]), tf.constant([2]), logits)
    wrong = ctc_loss(tf.constant([[12, 13, 0]]), tf.constant([2]), logits)
    assert float(right[0]) < 0.01
    assert float(wrong[0]) > 10
