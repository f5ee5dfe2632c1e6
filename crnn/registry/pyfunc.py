"""The serving contract: an MLflow pyfunc that maps encoded images to strings.

Input: encoded images (PNG, JPEG bytes of any size), as a list or the one column of a pandas DataFrame; in
JSON (MLflow's REST scoring) their base64. Output: one string per image. The signature says so
(``signature``), so MLflow checks a request before the model sees it, and the UI shows it on the model's page.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

EXPORT_ARTIFACT = "export"


def signature() -> ModelSignature:
    """Encoded image bytes in, text out; the column is unnamed, so that a plain list of bytes passes."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("binary")]), outputs=Schema([ColSpec("string")]))


def input_example() -> list[bytes]:
    """One PNG of a printed word, shown on the model's page and run through the model when it is logged."""
    import cv2

    image = np.full((32, 100), 255, np.uint8)
    cv2.putText(image, "crnn", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 0, 2)
    return [cv2.imencode(".png", image)[1].tobytes()]


class CrnnTextReader(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from crnn.model.export import Recognizer

        self.recognizer = Recognizer(context.artifacts[EXPORT_ARTIFACT])

    # No type hints here: MLflow would read them as an input schema beside the signature.
    def predict(self, context, model_input, params=None):
        return self.recognizer.read(_images(model_input))


def _images(model_input: Any) -> list[np.ndarray]:
    """Decoded images from a list of encoded images, or from a DataFrame's first column of them."""
    if hasattr(model_input, "columns"):
        model_input = model_input.iloc[:, 0].tolist()
    return [_decoded(item, index) for index, item in enumerate(model_input)]


def _decoded(item: Any, index: int) -> np.ndarray:
    from crnn.data.images import decode_image

    if not isinstance(item, (str, bytes, bytearray, memoryview)):
        raise ValueError(f"input {index}: expected encoded image bytes (PNG, JPEG), got {type(item).__name__}")
    data = item.encode() if isinstance(item, str) else bytes(item)
    image = decode_image(data)
    if image is None and (decoded := _from_base64(data)) is not None:
        image = decode_image(decoded)
    if image is None:
        raise ValueError(f"input {index}: not a decodable image (nor the base64 of one)")
    return image


def _from_base64(data: bytes) -> bytes | None:
    """JSON carries bytes as base64; MLflow's scoring decodes it for a DataFrame's binary column but hands the
    ``inputs`` form (and the logged serving example) over as the base64 text."""
    try:
        return base64.b64decode(data.replace(b"\n", b""), validate=True)
    except binascii.Error:
        return None
