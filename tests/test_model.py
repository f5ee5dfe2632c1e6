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


def test_the_network_reads_a_word_alike_at_any_brightness_and_contrast():
    """Standardised per image: a faint word (half the contrast, on a lighter or darker ground) reaches the
    convolutions as its crisp original does; only the normalisation's epsilon tells them apart."""
    assert PRESETS["quick"].model.standardise and not PRESETS["paper"].model.standardise
    model = build_crnn(PRESETS["tiny"].model, for_training=False)
    crisp = np.random.default_rng(2).integers(0, 256, (2, 32, 100, 1)).astype(np.uint8) & 0xFE
    expected = model(crisp, training=False).numpy()
    for faint in (crisp // 2, crisp // 2 + 127):
        np.testing.assert_allclose(model(faint.astype(np.uint8), training=False), expected, atol=2e-3)
    assert not np.allclose(model(255 - crisp, training=False), expected, atol=2e-3)  # polarity still counts


def test_the_served_model_has_keras_own_layers_and_the_trained_ones_outputs():
    from crnn.model.network import GlobalBatchNormalization

    config = PRESETS["tiny"].model
    trained, served = build_crnn(config), build_crnn(config, for_training=False)
    assert sum(isinstance(layer, GlobalBatchNormalization) for layer in trained.layers) == 7
    assert not any(isinstance(layer, GlobalBatchNormalization) for layer in served.layers)
    served.set_weights([np.asarray(w) for w in trained.get_weights()])
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 100, 1), dtype=np.uint8)
    np.testing.assert_array_equal(trained(images, training=False), served(images, training=False))


def test_unrolled_lstms_give_the_loops_results_and_cpus_train_them():
    from crnn.model.network import training_unroll

    config = PRESETS["tiny"].model
    loop, unrolled = build_crnn(config), build_crnn(config, unroll=True)
    unrolled.set_weights([np.asarray(w) for w in loop.get_weights()])
    assert [layer.forward_layer.unroll for layer in unrolled.layers if "bilstm" in layer.name] == [True, True]
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 100, 1), dtype=np.uint8)
    np.testing.assert_allclose(loop(images, training=False), unrolled(images, training=False), atol=1e-5)
    assert [training_unroll(device) for device in ("cpu", "gpu", "npu")] == [True, False, False]


def test_global_moments_on_one_device_are_the_batch_moments():
    from crnn.model.network import global_moments

    x = tf.random.stateless_normal((4, 8, 10, 3), seed=(1, 2)) * 3 + 1
    mean, variance = global_moments(x, [0, 1, 2])
    expected_mean, expected_variance = tf.nn.moments(x, [0, 1, 2])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(variance, expected_variance, rtol=1e-4)


def test_one_replica_trains_batch_norm_in_the_fused_kernel_with_keras_own_results():
    """The fused kernel's training step (outputs, gradients, moving statistics) against Keras' own layer."""
    from crnn.keras_compat import keras
    from crnn.model.network import GlobalBatchNormalization

    x = tf.random.stateless_normal((4, 8, 10, 3), seed=(3, 4)) * 2 + 0.5
    ours, keras_own = GlobalBatchNormalization(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    for layer in (ours, keras_own):
        layer.build(x.shape)
        layer.set_weights([np.array([1.5, 0.5, 2.0], np.float32), np.array([0.1, -0.2, 0.3], np.float32),
                           np.zeros(3, np.float32), np.ones(3, np.float32)])

    @tf.function
    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(3, dtype=tf.float32))
        return y, tape.gradient(loss, [x, *layer.trainable_variables])

    assert "FusedBatchNormV3" in {op.type for op in step.get_concrete_function(ours).graph.get_operations()}
    results = [step(layer) for layer in (ours, keras_own)]
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-5)
    for got, expected in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4)
    for got, expected in zip(ours.non_trainable_weights, keras_own.non_trainable_weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_ctc_loss_is_tensorflow_dense_ctc_loss_and_skips_what_cannot_align():
    logits = tf.random.stateless_normal((3, TIME_STEPS, 37), seed=(5, 6))
    labels = tf.constant([[1, 2, 2, 3, 0], [4, 0, 0, 0, 0], [7, 8, 9, 10, 11]])
    lengths = tf.constant([4, 1, 5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = ctc_loss(labels, lengths, logits)
        dense = tf.nn.ctc_loss(labels, logits, lengths, tf.fill([3], TIME_STEPS), logits_time_major=False,
                               blank_index=-1)
    np.testing.assert_allclose(ours, dense, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours, logits), tape.gradient(dense, logits), atol=1e-4)
    too_long = ctc_loss(tf.ones((1, TIME_STEPS + 1), tf.int32), tf.constant([TIME_STEPS + 1]), logits[:1])
    assert float(too_long[0]) == 0.0


def test_ctc_loss_is_lower_for_the_right_label():
    # Logits that spell "ab" (a=10, b=11) with blanks in between.
    path = [10, 36, 11] + [36] * (TIME_STEPS - 3)
    logits = tf.constant(np.eye(37, dtype=np.float32)[path][None] * 20)
    right = ctc_loss(tf.constant([[10, 11, 0]]), tf.constant([2]), logits)
    wrong = ctc_loss(tf.constant([[12, 13, 0]]), tf.constant([2]), logits)
    assert float(right[0]) < 0.01
    assert float(wrong[0]) > 10
