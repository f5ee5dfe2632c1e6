"""The model's input contract, defined once for conversion, training, evaluation and serving."""

from __future__ import annotations

import cv2
import numpy as np

from crnn.config import ModelConfig


def to_model_input(image: np.ndarray, model: ModelConfig) -> np.ndarray:
    """A BGR (or grayscale) uint8 image of any size -> uint8 array (height, width, channels).

    The word is stretched to the input size, as in the paper; pixel scaling to [-1, 1] happens inside the
    network so that every caller feeds plain uint8.
    """
    if image.ndim == 2:
        image = image[..., None]
    if model.channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None]
    elif model.channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    shrinking = image.shape[0] > model.height or image.shape[1] > model.width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (model.width, model.height), interpolation=interpolation)
    return resized.reshape(model.height, model.width, model.channels)
