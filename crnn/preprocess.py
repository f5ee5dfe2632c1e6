"""The model's input contract, defined once for conversion, training, evaluation and serving."""

from __future__ import annotations

import cv2
import numpy as np

from crnn.config import ModelConfig


def to_model_input(image: np.ndarray, model: ModelConfig) -> np.ndarray:
    """A BGR (or grayscale) uint8 image of any size -> uint8 array (height, width, channels).

    The word is stretched to the input size, as in the paper; pixel scaling (and any per-image standardisation)
    happens inside the network so that every caller feeds plain uint8.
    """
    height, width, channels = model.height, model.width, model.channels
    given = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if given not in (1, 3, 4):
        raise ValueError(f"expected a grayscale, BGR or BGRA image, got an array of shape {image.shape}")
    if given == 4:  # the alpha channel is not part of the word
        image, given = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), 3
    if given != channels:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_GRAY2BGR)
    shrinking = image.shape[0] > height or image.shape[1] > width
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return resized.reshape(height, width, channels)
