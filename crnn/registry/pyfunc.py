"""The serving contract: an MLflow pyfunc that maps images to strings.

Input: a uint8 array batch (B, H, W) or (B, H, W, C) of any size, or a list / pandas column of encoded
image bytes (PNG, JPEG). Output: one string per image.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

EXPORT_ARTIFACT = "export"


class CrnnTextReader(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from crnn.model.export import Recognizer

        self.recognizer = Recognizer(context.artifacts[EXPORT_ARTIFACT])

    # No type hints here: MLflow would read them as an input schema it cannot express.
    def predict(self, context, model_input, params=None):
        return self.recognizer.read(_images(model_input))


def _images(model_input: Any) -> list[np.ndarray]:
    """A batch array (B, H, W) grayscale or (B, H, W, 1|3) BGR, uint8; or items each of encoded bytes or an
    uint8 array of one image."""
    if hasattr(model_input, "columns"):  # a pandas DataFrame: its first column
        model_input = model_input.iloc[:, 0].tolist()
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        shape = model_input.shape
        # (H, W, 3) would pass for a batch of H grayscale images 3 pixels wide: read it as the mistake it is.
        one_image = model_input.ndim == 3 and shape[2] in (1, 3, 4)
        if model_input.ndim not in (3, 4) or one_image or (model_input.ndim == 4 and shape[3] not in (1, 3)):
            raise ValueError(f"expected a batch (B, H, W) or (B, H, W, 1|3), got shape {shape}")
        return [_checked_array(image, index) for index, image in enumerate(model_input)]
    return [_one_image(item, index) for index, item in enumerate(model_input)]


def _checked_array(image: np.ndarray, index: int) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"input {index}: images must be uint8, got {image.dtype}")
    return image


def _one_image(item: Any, index: int) -> np.ndarray:
    from crnn.data.images import decode_image

    if isinstance(item, np.ndarray) and item.dtype != object:
        return _checked_array(item, index)
    if not isinstance(item, (bytes, bytearray, memoryview)):
        raise ValueError(f"input {index}: expected encoded image bytes or a uint8 array, got {type(item).__name__}")
    image = decode_image(bytes(item))
    if image is None:
        raise ValueError(f"input {index}: not a decodable image")
    return image
