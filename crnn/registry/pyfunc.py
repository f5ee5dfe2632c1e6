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
    from crnn.data.readers import decode_image

    if hasattr(model_input, "columns"):  # a pandas DataFrame: its first column
        model_input = model_input.iloc[:, 0].tolist()
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim not in (3, 4):
            raise ValueError(f"expected an image batch (B, H, W[, C]), got shape {model_input.shape}")
        return list(model_input.astype(np.uint8))
    images = []
    for index, item in enumerate(model_input):
        image = decode_image(bytes(item))
        if image is None:
            raise ValueError(f"input {index}: not a decodable image")
        images.append(image)
    return images
