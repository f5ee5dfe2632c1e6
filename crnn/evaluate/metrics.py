"""The evaluation protocol: lexicon-free word accuracy and normalised edit distance.

Both prediction and ground truth are normalised (lowercase, characters outside the charset removed) before
comparison; normalised edit distance per sample is ``1 - ED / max(len(gt), len(pred))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crnn.charset import Charset


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, two rows of the dynamic-programming table at a time."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalised_similarity(gt: str, pred: str) -> float:
    longest = max(len(gt), len(pred))
    return 1.0 if longest == 0 else 1.0 - edit_distance(gt, pred) / longest


@dataclass(frozen=True)
class Score:
    num_samples: int
    correct: int
    accuracy: float  # 0-1
    ned: float  # mean normalised similarity, 0-1 (1 is perfect)


def score(ground_truths: Sequence[str], predictions: Sequence[str], charset: Charset) -> Score:
    if len(ground_truths) != len(predictions):
        raise ValueError(f"{len(ground_truths)} ground truths but {len(predictions)} predictions")
    pairs = [(charset.normalize(g), charset.normalize(p)) for g, p in zip(ground_truths, predictions)]
    correct = sum(g == p for g, p in pairs)
    total = len(pairs)
    return Score(
        num_samples=total,
        correct=correct,
        accuracy=correct / total if total else 0.0,
        ned=sum(normalised_similarity(g, p) for g, p in pairs) / total if total else 0.0,
    )
