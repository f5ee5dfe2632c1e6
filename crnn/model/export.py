"""The exported model: ``model.keras`` plus the recipe it was trained with, read back for inference."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crnn.charset import Charset
from crnn.config import RECIPE_FILE, Recipe
from crnn.files import atomic_path
from crnn.lineage import write_lineage
from crnn.preprocess import to_model_input

if TYPE_CHECKING:  # Keras loads with the model, not with the constants other steps import
    import keras

EXPORT_DIR = "export"  # inside a training output folder
MODEL_FILE = "model.keras"


def export_model(model: keras.Model, recipe: Recipe, dest: Path, lineage: Mapping[str, str] | None = None) -> Path:
    """Writes ``dest/`` whole or not at all, with the model's ``lineage`` (``crnn.lineage``)."""
    with atomic_path(Path(dest)) as tmp:
        tmp.mkdir()
        model.save(tmp / MODEL_FILE)
        recipe.save(tmp / RECIPE_FILE)
        write_lineage(tmp, lineage or {})
    return Path(dest)


class Recognizer:
    """An exported model ready to read text: images in, strings out."""

    def __init__(self, export_dir: Path):
        export_dir = Path(export_dir)
        if not (export_dir / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{export_dir}: no {MODEL_FILE}; is this an exported CRNN model?")
        self.recipe = Recipe.load(export_dir / RECIPE_FILE)
        import keras

        self.model = keras.models.load_model(export_dir / MODEL_FILE, compile=False)
        self.charset = Charset(self.recipe.model.charset)

    def predict_batch(self, batch: np.ndarray) -> list[str]:
        """Preprocessed uint8 batch (B, H, W, C) -> texts."""
        from crnn.model.ctc import greedy_decode

        return greedy_decode(self.model.predict_on_batch(batch), self.charset)

    def read(self, images: list[np.ndarray], batch_size: int = 256) -> list[str]:
        """Decoded BGR or grayscale images of any size -> texts."""
        texts: list[str] = []
        for start in range(0, len(images), batch_size):
            chunk = [to_model_input(image, self.recipe.model) for image in images[start:start + batch_size]]
            texts.extend(self.predict_batch(np.stack(chunk)))
        return texts
