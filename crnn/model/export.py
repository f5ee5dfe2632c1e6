"""The exported model: the model file (``crnn.keras_compat.save_for_serving``) plus the recipe it was trained
with, read back for inference."""

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

if TYPE_CHECKING:  # TensorFlow loads with the model, not with the constants other steps import
    from crnn.keras_compat import keras

EXPORT_DIR = "export"  # inside a training output folder
# The model file, whichever stack wrote it: the whole model (Keras 3), or the weights (tf.keras 2.6).
MODEL_FILE, WEIGHTS_FILE = "model.keras", "weights.h5"


def saved_model_file(folder: Path) -> Path | None:
    """The model file an export folder holds; None when it holds neither."""
    return next((folder / name for name in (MODEL_FILE, WEIGHTS_FILE) if (folder / name).is_file()), None)


def export_model(model: keras.Model, recipe: Recipe, dest: Path, lineage: Mapping[str, str] | None = None) -> Path:
    """Writes ``dest/`` whole or not at all, with the model's ``lineage`` (``crnn.lineage``)."""
    with atomic_path(Path(dest)) as tmp:
        tmp.mkdir()
        from crnn.keras_compat import save_for_serving

        save_for_serving(model, tmp)
        recipe.save(tmp / RECIPE_FILE)
        write_lineage(tmp, lineage or {})
    return Path(dest)


class Recognizer:
    """An exported model ready to read text: images in, strings out."""

    def __init__(self, export_dir: Path):
        from crnn.keras_compat import load_for_serving
        from crnn.model.network import build_crnn

        export_dir = Path(export_dir)
        self.recipe = Recipe.load(export_dir / RECIPE_FILE)
        self.model = load_for_serving(export_dir, lambda: build_crnn(self.recipe.model, for_training=False))
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
