"""A picture of sample predictions, right and wrong, each beside its ground truth (a PNG for MLflow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from crnn.files import atomic_path

_SCALE, _TEXT_WIDTH, _FONT = 2, 420, cv2.FONT_HERSHEY_SIMPLEX
_GREEN, _RED, _GREY = (40, 140, 40), (30, 30, 200), (90, 90, 90)


def render_samples(samples: Sequence[tuple[np.ndarray, str, str, bool]], title: str, dest: Path) -> Path:
    """``samples``: (model-input image uint8 HxWxC, ground truth, prediction, correct) -> one PNG, a row each."""
    if not samples:
        raise ValueError(f"{title}: no samples to draw")
    rows = [_title_row(title, samples[0][0].shape[1] * _SCALE + _TEXT_WIDTH)]
    rows += [_row(*sample) for sample in samples]
    # The strongest compression (OpenCV's default favours speed): the picture goes to MLflow and through KFP's
    # artifact store once per benchmark.
    encoded, png = cv2.imencode(".png", np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not encoded:
        raise ValueError(f"{title}: the picture could not be encoded as PNG")
    with atomic_path(Path(dest)) as tmp:
        tmp.write_bytes(png.tobytes())
    return Path(dest)


def _row(image: np.ndarray, ground_truth: str, prediction: str, correct: bool) -> np.ndarray:
    picture = cv2.resize(image, None, fx=_SCALE, fy=_SCALE, interpolation=cv2.INTER_NEAREST)
    picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR) if picture.ndim == 2 or picture.shape[2] == 1 else picture
    text = np.full((picture.shape[0], _TEXT_WIDTH, 3), 255, np.uint8)
    cv2.putText(text, f"truth: {_ascii(ground_truth)}", (10, 24), _FONT, 0.6, _GREY, 1, cv2.LINE_AA)
    cv2.putText(text, f"read:  {_ascii(prediction)}", (10, 52), _FONT, 0.6, _GREEN if correct else _RED, 1,
                cv2.LINE_AA)
    row = np.hstack([picture, text])
    row[-1, :] = 200  # a rule between rows
    return row


def _title_row(title: str, width: int) -> np.ndarray:
    row = np.full((36, width, 3), 255, np.uint8)
    cv2.putText(row, title, (10, 25), _FONT, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    return row


def _ascii(text: str) -> str:
    """OpenCV's font draws ASCII only."""
    return text.encode("ascii", "replace").decode() or "(empty)"
