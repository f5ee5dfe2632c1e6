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


def test_ctc_loss_is_lower_for_the_right_label():
    # Logits that spell "ab" (a=10, b=11) with blanks in between.
    path = [10, 36, 11] + [36] * (TIME_STEPS - 3)
    logits = tf.constant(np.eye(37, dtype=np.float32)[path][None] * 20)
    right = ctc_loss(tf.constant([[10, 11, 0]]), tf.constant([2]), logits)
    wrong = ctc_loss(tf.constant([[12, 13, 0]]), tf.constant([2]), logits)
    assert float(right[0]) < 0.01
    assert float(wrong[0]) > 10
